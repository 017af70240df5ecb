"""Rows of the op table: movement ops (index arithmetic only), with their VJPs."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..dtypes import to_numpy
from ..node import Node
from .build import inverse_permutation, reduce_to
from .spec import ANY, Category, Grads, OpSpec, declare

M = Category.MOVEMENT


def _slice(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return args[0][tuple(slice(a, b, c) for a, b, c in node.attrs[0])]


def _pad(node: Node, args: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(node.shape, dtype=to_numpy(node.dtype))
    out[tuple(slice(s, s + n * st, st) if n else slice(0, 0)
              for (s, st), n in zip(node.attrs[0], args[0].shape))] = args[0]
    return out


def _slice_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    placement = tuple((start, step) for start, _, step in n.attrs[0])
    return (ops.pad(g, x.shape, placement, n.loc),)


def _pad_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    ranges = tuple((start, start + (size - 1) * step + 1 if size else start, step)
                   for (start, step), size in zip(n.attrs[0], x.shape))
    return (ops.slice_(g, ranges, n.loc),)


declare(
    OpSpec("reshape", 1, M, ANY, "same", lambda n, a: a[0].reshape(n.shape),
           lambda n, g: (ops.reshape(g, n.inputs[0].shape, n.loc),)),
    OpSpec("permute", 1, M, ANY, "same", lambda n, a: np.transpose(a[0], n.attrs[0]),
           lambda n, g: (ops.permute(g, inverse_permutation(n.attrs[0]), n.loc),)),
    OpSpec("expand", 1, M, ANY, "same", lambda n, a: np.broadcast_to(a[0], n.shape),
           lambda n, g: (reduce_to(g, n.inputs[0].shape),)),
    OpSpec("slice", 1, M, ANY, "same", _slice, _slice_grads),
    OpSpec("pad", 1, M, ANY, "same", _pad, _pad_grads),
)
