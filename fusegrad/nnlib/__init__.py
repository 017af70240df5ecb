"""Layers, losses and initialisation with ``torch.nn``'s API."""
from . import functional, init
from .module import Module
from .modules.activation import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .modules.container import ModuleDict, ModuleList, Sequential
from .modules.linear import Identity, Linear
from .modules.loss import CrossEntropyLoss, MSELoss, NLLLoss
from .parameter import Parameter

__all__ = ["Module", "Parameter", "Linear", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Sequential", "ModuleList", "ModuleDict", "CrossEntropyLoss", "MSELoss",
           "NLLLoss", "functional", "init"]
