"""The negative log-likelihood of class indices (``nll_loss``, and ``cross_entropy`` after its
``log_softmax``), built as IR nodes.

Nearly every classifier's step ends in this loss. Written with Tensor ops it traces 16 of them
(a one-hot mask, the picked log-probabilities, the ignored targets, the weighted mean), at about
15 us each for the user-line lookup, the Tensor and its autograd flags: 0.25 ms of a 1.7 ms MLP
step. Built here, with the user's line looked up once by the caller, it builds the nodes those
Tensor ops would (the tests compare the graphs), so values, gradients, fusion and the program
cache see no difference. The callers (``nnlib/functional.py``) check shapes, dtypes and the
target range first.
"""
from __future__ import annotations

import functools

import numpy as np

from ..ir import ops
from ..ir.dtypes import promote
from ..ir.macro import call, register
from ..ir.node import Node
from .creation import buffer_tensor
from .functions import broadcast_node, broadcast_shapes, node_of, wrap
from .tensor import Tensor


@functools.lru_cache(maxsize=64)
def _classes(num_classes: int) -> Node:
    """``arange(num_classes)`` as a constant table: the comparison that makes the one-hot mask
    runs on the target's device. Kept per size (one leaf, not a new one per step)."""
    return buffer_tensor(np.arange(num_classes, dtype=np.int64)).node


def _binary(op: str, a: Node, b: Node, loc: str | None) -> Node:
    """``a op b`` of two tensors as ``tracer.functions.binary`` builds it: both cast to the
    promoted dtype and broadcast to one shape."""
    common = promote(a.dtype, b.dtype)
    shape = broadcast_shapes(a.shape, b.shape, op=op, loc=loc)
    return ops.binary(op, broadcast_node(ops.cast(a, common, loc), shape, loc),
                      broadcast_node(ops.cast(b, common, loc), shape, loc), loc)


def _sum(x: Node, dims: tuple[int, ...], loc: str | None) -> Node:
    """``F.sum(x, dims)`` without ``keepdim`` (every dim for ``dims=()`` of a tensor with dims)."""
    dims = dims or tuple(range(len(x.shape)))
    if not dims:
        return x
    reduced = ops.reduce("sum", x, dims, loc)
    return ops.reshape(reduced, tuple(d for i, d in enumerate(x.shape) if i not in dims), loc)


def _where_zero(mask: Node, x: Node, loc: str | None) -> Node:
    """``F.where(mask, x, 0.0)``, ``x`` broadcast to the mask's shape."""
    shape = mask.shape
    return ops.where(mask, broadcast_node(x, shape, loc), ops.const(0.0, shape, x.dtype, loc), loc)


def weighted_mean(total: Node, denom: Node, loc: str | None) -> Node:
    """``total / denom``: nan when every target is ignored, yet a zero gradient then (torch's)."""
    dt = denom.dtype
    empty = ops.binary("eq", denom, ops.const(0.0, denom.shape, dt, loc), loc)
    safe = ops.where(empty, ops.const(1.0, denom.shape, dt, loc), denom, loc)
    quotient = _binary("div", total, safe, loc)
    return ops.where(empty, ops.const(float("nan"), quotient.shape, quotient.dtype, loc), quotient,
                     loc)


def class_mask(target: Node, num_classes: int, class_dim: int, ndim: int,
               loc: str | None, classes: Node | None = None) -> Node:
    """One-hot of ``target`` along ``class_dim`` (bool), built from a comparison that fuses
    (``classes``: the ``_classes`` table, if the caller has it)."""
    shape = [1] * ndim
    shape[class_dim] = num_classes
    table = classes if classes is not None else _classes(num_classes)
    classes = ops.reshape(table, tuple(shape), loc)
    unsqueezed = ops.reshape(target, target.shape[:class_dim] + (1,) + target.shape[class_dim:],
                             loc)
    return _binary("eq", unsqueezed, classes, loc)


def nll(logp: Node, target: Node, weight: Node | None, ignore_index: int, reduction: str,
        loc: str | None, classes: Node | None = None) -> Node:
    """The loss of log-probabilities ``logp`` (C), (N, C) or (N, C, d1, ...) at class indices
    ``target`` (``weight``: one per class, or None), reduced by ``reduction``."""
    ndim = len(logp.shape)
    class_dim = 1 if ndim > 1 else 0
    num_classes = logp.shape[class_dim]
    if weight is not None:
        shape = [1] * ndim
        shape[class_dim] = num_classes
        weight = ops.reshape(weight, tuple(shape), loc)
    mask = class_mask(target, num_classes, class_dim, ndim, loc, classes)
    # where, not mask * logp: a -inf log-probability of another class must not give nan
    picked = _where_zero(mask, logp if weight is None else _binary("mul", logp, weight, loc), loc)
    ignored = ops.const(ignore_index, target.shape, target.dtype, loc)
    keep = ops.cast(ops.binary("ne", target, ignored, loc), logp.dtype, loc)
    loss = _binary("mul", ops.unary("neg", _sum(picked, (class_dim,), loc), loc), keep, loc)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return _sum(loss, (), loc)
    if weight is None:
        denom = _sum(keep, (), loc)
    else:
        per_target = _sum(_where_zero(mask, weight, loc), (class_dim,), loc)
        denom = _sum(_binary("mul", per_target, keep, loc), (), loc)
    return weighted_mean(_sum(loss, (), loc), denom, loc)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
             reduction: str, loc: str | None) -> Tensor:
    """``nll`` of checked Tensors: ``input`` log-probabilities, ``target`` class indices,
    traced as one macro node (``ir/macro.py``) that ``_expand_nll`` expands when compiled."""
    logp = node_of(input)
    classes = _classes(logp.shape[1 if len(logp.shape) > 1 else 0])
    inputs = [logp, node_of(target), classes] + ([node_of(weight)] if weight is not None else [])
    (node,) = call("nll", inputs, (ignore_index, reduction), loc)
    return wrap(node, input, weight)


def _expand_nll(inputs: tuple[Node, ...], params: tuple, loc: str | None) -> list[Node]:
    logp, target, classes, *weight = inputs
    return [nll(logp, target, weight[0] if weight else None, *params, loc, classes)]


register("nll", _expand_nll)


def one_hot_mask(target: Tensor, num_classes: int, class_dim: int, ndim: int,
                 loc: str | None) -> Tensor:
    """``class_mask`` of a Tensor of class indices."""
    return wrap(class_mask(node_of(target), num_classes, class_dim, ndim, loc))


def masked_mean(total: Tensor, denom: Tensor, loc: str | None) -> Tensor:
    """``weighted_mean`` of two Tensors."""
    return wrap(weighted_mean(node_of(total), node_of(denom), loc), total, denom)
