"""Rows of the op table: reductions over axes (kept as size-1 dims), with their VJPs."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..dtypes import to_numpy
from ..node import Node
from .build import mul
from .spec import ANY, NOT_DIFFERENTIABLE, Category, Grads, OpSpec, declare


def _sum(node: Node, args: list[np.ndarray]) -> np.ndarray:
    # float32 adds in float64 and rounds once, as the numba_cpu kernels do (numpy's own
    # float32 sum is pairwise along the last axis only, naive along the others)
    dt = to_numpy(node.dtype)
    wide = np.float64 if dt == np.float32 else dt
    return np.sum(args[0], axis=node.attrs[0], keepdims=True, dtype=wide)


def _max(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return np.max(args[0], axis=node.attrs[0], keepdims=True)


def _argmax(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return np.expand_dims(np.argmax(args[0], axis=node.attrs[0]), node.attrs[0])


def _max_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    loc = n.loc
    hit = ops.cast(ops.binary("eq", x, ops.expand(n, x.shape, loc), loc), x.dtype, loc)
    count = ops.reduce("sum", hit, n.attrs[0], loc)
    share = ops.binary("div", g, count, loc)
    return (mul(hit, ops.expand(share, x.shape, loc)),)


declare(
    OpSpec("sum", 1, Category.REDUCE, ANY, "same", _sum,
           lambda n, g: (ops.expand(g, n.inputs[0].shape, n.loc),)),
    OpSpec("max", 1, Category.REDUCE, ANY, "same", _max, _max_grads),
    OpSpec("argmax", 1, Category.REDUCE, ANY, "int64", _argmax, NOT_DIFFERENTIABLE),
)
