"""Common-subexpression elimination: one node for ``a + b`` and ``b + a``.

Hash-consing already merges structurally equal nodes; what is left is to put the operands of
commutative ops (the op table's, per dtype: float ``maximum``/``minimum`` are not) in one
canonical order. The order compares structural keys (``ir/key.py``), so it is the same in every
process. A buffer's key is its position among the graph's buffers in topological order.
"""
from __future__ import annotations

from ..graph import Graph, toposort
from ..key import StructuralKeys
from ..node import Node
from ..optable import is_commutative
from .rewrite import rebuild, rewrite


def graph_keys(graph: Graph) -> StructuralKeys:
    """Structural keys of the nodes of ``graph`` (and of its rewrites), buffers by position."""
    order = toposort(graph.outputs)
    position = {n: k for k, n in enumerate(n for n in order if n.op == "buffer")}
    return StructuralKeys(lambda n: ("buffer", n.shape, n.dtype, position[n])
                          if n.op == "buffer" else None)


def common_subexpression_elimination(graph: Graph) -> Graph:
    """Order the two operands of every commutative op by structural key, merging mirrored nodes.

    Args:
        graph: the graph to canonicalise; it is left unchanged.
    """
    keys = graph_keys(graph)

    def order_operands(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if is_commutative(node) and keys[inputs[1]] < keys[inputs[0]]:
            return rebuild(node, (inputs[1], inputs[0]))
        return None

    return rewrite(graph, order_operands)
