"""Layers, losses and initialisation with ``torch.nn``'s API."""
from . import functional, init
from .module import Module
from .modules.activation import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .modules.container import ModuleDict, ModuleList, Sequential
from .modules.conv import Conv1d, Conv2d, Conv3d
from .modules.flatten import Flatten, Unflatten
from .modules.linear import Identity, Linear
from .modules.pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                              AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d)
from .modules.loss import CrossEntropyLoss, MSELoss, NLLLoss
from .parameter import Parameter

__all__ = ["Module", "Parameter", "Linear", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Sequential", "ModuleList", "ModuleDict", "CrossEntropyLoss", "MSELoss",
           "NLLLoss", "functional", "init", "Conv1d", "Conv2d", "Conv3d", "Flatten", "Unflatten",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AvgPool1d", "AvgPool2d",
           "AvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d"]
