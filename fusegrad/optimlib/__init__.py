"""Optimizers with ``torch.optim``'s API; their updates compile to fused kernels."""
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD"]
