"""Parameter: a leaf Tensor that a Module registers as learnable."""
from __future__ import annotations

from typing import Any

from ..tracer.capture import mark_state
from ..tracer.tensor import Tensor, _detached


class Parameter(Tensor):
    """A Tensor that requires grad and is found by ``Module.parameters()``."""

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = Tensor([])
        if not isinstance(data, Tensor):
            data = Tensor(data)
        self._bind(_detached(data.node))
        self.grad = None
        self._is_leaf = True
        self._version = 0
        self._retains_grad = False
        self._graph_freed = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)
        mark_state(self)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, proto: Any):
        raise TypeError("fusegrad tensors are saved with fusegrad.save, not pickle")
