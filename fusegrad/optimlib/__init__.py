"""Optimizers and learning-rate schedulers with ``torch.optim``'s API.

Each parameter's update compiles to one fused kernel, and a whole step to one program that is
reused while hyperparameters change (see ``optimizer`` for how).
"""
from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
