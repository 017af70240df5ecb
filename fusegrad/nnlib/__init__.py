"""Layers, losses and initialisation with ``torch.nn``'s API."""
from . import functional, init, utils
from .module import Module
from .modules.activation import (ELU, GELU, SELU, Hardtanh, LeakyReLU, LogSoftmax, Mish, ReLU,
                                 ReLU6, Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .modules.container import ModuleDict, ModuleList, Sequential
from .modules.conv import Conv1d, Conv2d, Conv3d
from .modules.flatten import Flatten, Unflatten
from .modules.linear import Identity, Linear
from .modules.pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                              AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d)
from .modules.dropout import Dropout, Dropout1d, Dropout2d, Dropout3d
from .modules.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss,
                           MSELoss, NLLLoss, SmoothL1Loss)
from .modules.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, LayerNorm
from .parameter import Parameter

__all__ = ["Module", "Parameter", "Linear", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Sequential", "ModuleList", "ModuleDict", "CrossEntropyLoss", "MSELoss",
           "NLLLoss", "functional", "init", "Conv1d", "Conv2d", "Conv3d", "Flatten", "Unflatten",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AvgPool1d", "AvgPool2d",
           "AvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "ELU", "GELU", "SELU", "Hardtanh",
           "LeakyReLU", "Mish", "ReLU6", "SiLU", "Softplus", "Dropout", "Dropout1d", "Dropout2d",
           "Dropout3d", "BCELoss", "BCEWithLogitsLoss", "HuberLoss", "L1Loss", "SmoothL1Loss",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "LayerNorm", "utils"]
