"""Parameter: a leaf Tensor that a Module registers as learnable."""
from __future__ import annotations

from typing import Any

from ..tracer import state as tracer_state
from ..tracer.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that requires grad and is found by ``Module.parameters()``."""

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = Tensor([])
        if not isinstance(data, Tensor):
            data = Tensor(data)
        tracer_state.share_storage(self, data)
        self.grad = None  # through the property: a compile trace sees the grad set
        tracer_state.make_leaf(self, requires_grad)
        tracer_state.mark_state(self)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, proto: Any):
        raise TypeError("fusegrad tensors are saved with fusegrad.save, not pickle")
