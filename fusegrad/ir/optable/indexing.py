"""Rows of the op table: data-dependent indexing and extern ops (library calls, collectives),
with their VJPs."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..dtypes import to_numpy
from ..node import Node
from .build import transpose_last
from .spec import ANY, FLOAT, NOT_DIFFERENTIABLE, VARIADIC, Category, OpSpec, declare


def _gather(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return np.take_along_axis(args[0], args[1].astype(np.int64), axis=node.attrs[0])


def _scatter_add(node: Node, args: list[np.ndarray]) -> np.ndarray:
    axis = node.attrs[0]
    out = np.zeros(node.shape, dtype=to_numpy(node.dtype))
    idx = list(np.indices(args[0].shape, sparse=True))
    idx[axis] = args[0].astype(np.int64)
    np.add.at(out, tuple(idx), args[1])
    return out


NUMBERS = frozenset({"float32", "float64", "int32", "int64"})


def _allreduce(node: Node, args: list[np.ndarray]) -> np.ndarray:
    from ..collective import allreduce
    return allreduce(args[0], node.attrs[0])


def _concat_grads(node: Node, g: Node) -> tuple[Node, ...]:
    axis, start, grads = node.attrs[0], 0, []
    for part in node.inputs:
        n = part.shape[axis]
        ranges = tuple((start, start + n, 1) if d == axis else (0, size, 1)
                       for d, size in enumerate(node.shape))
        grads.append(ops.slice_(g, ranges, node.loc))
        start += n
    return tuple(grads)


declare(
    OpSpec("gather", 2, Category.GATHER, ANY, "same", _gather,
           lambda n, g: (ops.scatter_add(n.inputs[1], g, n.attrs[0], n.inputs[0].shape, n.loc),
                         None)),
    OpSpec("scatter_add", 2, Category.EXTERN, ANY, "same", _scatter_add,
           lambda n, g: (None, ops.gather(g, n.inputs[0], n.attrs[0], n.loc))),
    # a collective across processes (data-parallel gradients); like torch.distributed's, it
    # carries no gradient
    OpSpec("allreduce", 1, Category.EXTERN, NUMBERS, "same", _allreduce, NOT_DIFFERENTIABLE),
    # made by fusion from a long sum of pads (the front end's cat); VARIADIC operands
    OpSpec("concat", VARIADIC, Category.EXTERN, ANY, "same",
           lambda n, a: np.concatenate(a, axis=n.attrs[0]), _concat_grads),
    OpSpec("matmul", 2, Category.EXTERN, FLOAT, "same", lambda n, a: np.matmul(a[0], a[1]),
           lambda n, g: (ops.matmul(g, transpose_last(n.inputs[1]), n.loc),
                         ops.matmul(transpose_last(n.inputs[0]), g, n.loc))),
)
