"""Fusion: partition a graph into kernels and extern calls, producing a Schedule.

Three stages, each in its own module:

1. :func:`~fusegrad.ir.passes.fuse_normalise.normalise` rewrites the graph for grouping with
   value-preserving rules on the shared rewrite engine.
2. :func:`~fusegrad.ir.passes.fuse_group.group` places the compute nodes into kernels in
   topological order; named rules refuse what may not fuse, with a structured reason.
3. :func:`~fusegrad.ir.passes.fuse_build.build` makes the Schedule: loads through views, what is
   materialised and by whom, the order of the items and their names.

Every decision (and every refusal) is a record (``fusegrad.ir.fusion_decisions``) on the item it
concerns, or on the Schedule.
"""
from __future__ import annotations

from ..fusion_decisions import NodeLabels
from ..autodiff import expand_graph
from ..graph import Graph, toposort
from ..schedule import Schedule
from .fuse_build import build
from .fuse_group import MAX_KERNEL_NODES, group
from .fuse_normalise import normalise

__all__ = ["MAX_KERNEL_NODES", "fuse"]


def fuse(graph: Graph, concat: bool = True) -> Schedule:
    """Partition ``graph`` into kernels and extern calls.

    Args:
        graph: any valid graph, optimised or not (deferred gradients are expanded first).
        concat: the backend runs the ``concat`` extern (``fuse_sums.py``).

    Returns:
        A Schedule that meets the contract in ``fusegrad.ir.schedule``. Each fusion decision
        (and each refusal) is a ``FusionDecision`` in ``Kernel.decisions``, ``Extern.decisions``
        or ``Schedule.decisions``; ``Schedule.node_ids`` numbers nodes as ``format_graph(graph)``
        does.
    """
    graph = expand_graph(graph)
    order = toposort(graph.outputs)
    labels = NodeLabels(order)
    outputs, decisions = normalise(graph, order, labels, concat)
    order = toposort(outputs)
    return build(group(order, labels), order, outputs, labels, decisions)
