"""Gradient clipping and parameter/vector conversion (``torch.nn.utils``).

Clipping is recorded lazily like every other op: the total norm and the scaled gradients are
computed with the next realization (typically the optimizer step), so clipping fuses into the
update. Only ``error_if_nonfinite=True`` has to read the norm right away.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from ..tracer import functions as F
from ..tracer.creation import tensor as make_tensor
from ..tracer.grad_mode import no_grad
from ..tracer.tensor import Tensor

Parameters = Tensor | Iterable[Tensor]


def _as_list(parameters: Parameters) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def _vector_norm(x: Tensor, norm_type: float) -> Tensor:
    """``torch.linalg.vector_norm`` of all of ``x`` (0-d)."""
    a = F.abs(x)
    if norm_type == math.inf:
        return F.amax(a)
    if norm_type == -math.inf:
        return F.amin(a)
    if norm_type == 0:
        return F.sum(F.to_dtype(F.ne(x, 0), x.dtype))
    if norm_type == 1:
        return F.sum(a)
    if norm_type == 2:
        return F.sqrt(F.sum(x * x))
    return F.pow(F.sum(F.pow(a, norm_type)), 1.0 / norm_type)


def get_total_norm(tensors: Parameters, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """The norm of the norms of ``tensors`` (their norm as one concatenated vector)."""
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return make_tensor(0.0)
    with no_grad():
        norms = [_vector_norm(t, norm_type) for t in tensors]
        total = _vector_norm(F.stack([F.to_dtype(n, norms[0].dtype) for n in norms]), norm_type)
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the gradients "
            "by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return total


def clip_grads_with_norm_(parameters: Parameters, max_norm: float, total_norm: Tensor,
                          foreach: bool | None = None) -> None:
    """Scale every gradient by ``min(1, max_norm / (total_norm + 1e-6))``, in place."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    with no_grad():
        coef = F.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(F.to_dtype(coef, g.dtype))


def clip_grad_norm_(parameters: Parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Clip the gradients' total norm to ``max_norm``; returns the norm before clipping.

    Args:
        parameters: tensors (or one tensor) whose ``.grad`` is clipped in place.
        max_norm: the largest total norm allowed.
        norm_type: the p of the p-norm; ``math.inf`` for the largest absolute value.
        error_if_nonfinite: raise if the total norm is nan or inf (this reads the norm now).
    """
    parameters = _as_list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grad_value_(parameters: Parameters, clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient to ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    with no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                p.grad.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated into one 1-D tensor (differentiable)."""
    return F.cat([F.reshape(p, (-1,)) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of ``vec`` into the parameters' data."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected fusegrad.Tensor, but got: {type(vec).__name__}")
    pointer = 0
    for p in parameters:
        n = p.numel()
        p.data = F.reshape(F.slice_dim(vec, 0, pointer, pointer + n), tuple(p.shape))
        pointer += n
