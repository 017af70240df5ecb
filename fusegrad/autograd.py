"""``fusegrad.autograd``: as ``torch.autograd``, ``grad`` and ``backward`` as functions."""
from __future__ import annotations

from collections.abc import Sequence

from .tracer.autograd import grad
from .tracer.grad_mode import enable_grad, no_grad, set_grad_enabled
from .tracer.tensor import Tensor

__all__ = ["backward", "enable_grad", "grad", "no_grad", "set_grad_enabled"]


def backward(tensors: Tensor | Sequence[Tensor],
             grad_tensors: Tensor | Sequence[Tensor | None] | None = None,
             retain_graph: bool | None = None, create_graph: bool = False,
             inputs: Sequence[Tensor] | None = None) -> None:
    """Accumulate the gradients of each of ``tensors`` into the leaves' ``.grad``."""
    outs = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    weights = [grad_tensors] if grad_tensors is None or isinstance(grad_tensors, Tensor) \
        else list(grad_tensors)
    weights = weights * len(outs) if len(weights) == 1 else weights
    for t, w in zip(outs, weights):
        t.backward(w, retain_graph=retain_graph, create_graph=create_graph,
                   inputs=list(inputs) if inputs is not None else None)
