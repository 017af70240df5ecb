"""Small IR builders the VJP rules of the table rows share."""
from __future__ import annotations

from .. import ops
from ..node import Node


def const_like(like: Node, value: float) -> Node:
    """A constant of ``like``'s shape and dtype."""
    return ops.const(value, like.shape, like.dtype, like.loc)


def mul(a: Node, b: Node) -> Node:
    return ops.binary("mul", a, b, a.loc)


def reduce_to(g: Node, shape: tuple[int, ...]) -> Node:
    """Sum ``g`` over the axes that were broadcast from size 1 to reach its shape."""
    axes = tuple(i for i, (s, d) in enumerate(zip(shape, g.shape)) if s == 1 and d != 1)
    return ops.reduce("sum", g, axes, g.loc) if axes else g


def transpose_last(x: Node) -> Node:
    perm = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
    return ops.permute(x, perm, x.loc)


def inverse_permutation(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)
