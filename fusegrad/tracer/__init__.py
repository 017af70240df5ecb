"""The front end: lazy Tensors, op recording with provenance, autograd, realization."""
from . import methods as _methods
from .tensor import Tensor

_methods.install()

__all__ = ["Tensor"]
