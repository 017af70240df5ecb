"""Rows of the op table: reductions over axes (kept as size-1 dims), with their VJPs."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..dtypes import is_float, to_numpy
from ..node import Node
from .build import const_like
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
    """The gradient shared evenly by the elements equal to the maximum (every NaN, where the
    maximum is NaN), zero elsewhere: selected, not multiplied, so a NaN or inf gradient stays
    on the maximum's elements, as torch's."""
    (x,) = n.inputs
    loc = n.loc
    top = ops.expand(n, x.shape, loc)
    hit = ops.binary("eq", x, top, loc)
    if is_float(x.dtype):
        hit = ops.where(ops.binary("ne", top, top, loc), ops.binary("ne", x, x, loc), hit, loc)
    count = ops.reduce("sum", ops.cast(hit, x.dtype, loc), n.attrs[0], loc)
    share = ops.expand(ops.binary("div", g, count, loc), x.shape, loc)
    return (ops.where(hit, share, const_like(x, 0.0), loc),)


declare(
    OpSpec("sum", 1, Category.REDUCE, ANY, "same", _sum,
           lambda n, g: (ops.expand(g, n.inputs[0].shape, n.loc),)),
    OpSpec("max", 1, Category.REDUCE, ANY, "same", _max, _max_grads),
    OpSpec("argmax", 1, Category.REDUCE, ANY, "int64", _argmax, NOT_DIFFERENTIABLE),
)
