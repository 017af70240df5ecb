"""Floating-point operations of a graph: how much arithmetic a program does, for GFLOP/s.

Counts follow the usual conventions: a matrix product is ``2*M*N*K``, an elementwise op one
operation per output element, a reduction one per input element, a scatter-add one per update;
leaves, movements, gathers, casts and ``detach`` are free (index arithmetic or copies).
"""
from __future__ import annotations

from math import prod

from .graph import toposort
from .node import Node
from .ops import ELEMENTWISE, REDUCE

_FREE = frozenset({"cast", "detach"})


def node_flops(n: Node) -> int:
    """Floating-point operations of one node."""
    if n.op == "matmul":
        return 2 * prod(n.shape) * n.inputs[0].shape[-1]
    if n.op == "scatter_add":
        return prod(n.inputs[-1].shape)
    if n.op in REDUCE:
        return prod(n.inputs[0].shape)
    if n.op in ELEMENTWISE and n.op not in _FREE:
        return prod(n.shape)
    return 0


def count_flops(outputs: list[Node] | tuple[Node, ...]) -> int:
    """Floating-point operations needed to compute ``outputs`` (each node counted once; deferred
    gradients counted as the graphs they stand for)."""
    from .autodiff import expand_gradients
    return sum(node_flops(n) for n in toposort(expand_gradients(outputs)))
