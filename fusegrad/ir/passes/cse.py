"""Common-subexpression elimination: one node for ``a + b`` and ``b + a``.

Hash-consing already merges structurally equal nodes; what is left is to put the operands of
commutative ops in one canonical order. The order compares structural keys, digests computed
bottom-up from op, shape, dtype, attrs and the inputs' keys, so it is the same in every process
(object ids and uids are not). A buffer's key is its position among the graph's buffers in
topological order.
"""
from __future__ import annotations

import hashlib

from ..graph import Graph, toposort
from ..node import Node
from .rewrite import rebuild, rewrite

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "eq", "ne"})


class StructuralKeys:
    """Memoised structural keys (16-byte digests) of the nodes of one graph and its rewrites."""

    def __init__(self, graph: Graph):
        order = toposort(graph.outputs)
        self._buffer_position = {n: k for k, n in enumerate(n for n in order if n.op == "buffer")}
        self._keys: dict[Node, bytes] = {}

    def __getitem__(self, node: Node) -> bytes:
        """The key of ``node``, computing those of its not yet seen inputs first (iteratively)."""
        stack = [node]
        while stack:
            top = stack[-1]
            if top in self._keys:
                stack.pop()
                continue
            missing = [i for i in top.inputs if i not in self._keys]
            if missing:
                stack.extend(missing)
                continue
            self._keys[top] = self._digest(top)
            stack.pop()
        return self._keys[node]

    def _digest(self, node: Node) -> bytes:
        inputs = [self._keys[i] for i in node.inputs]
        if node.op in COMMUTATIVE:
            inputs.sort()
        attrs = ("buffer", self._buffer_position[node]) if node.op == "buffer" else node.attrs
        text = repr((node.op, node.shape, node.dtype, attrs))
        h = hashlib.blake2b(text.encode(), digest_size=16)
        for key in inputs:
            h.update(key)
        return h.digest()


def common_subexpression_elimination(graph: Graph) -> Graph:
    """Order the two operands of every commutative op by structural key, merging mirrored nodes.

    Args:
        graph: the graph to canonicalise; it is left unchanged.
    """
    keys = StructuralKeys(graph)

    def order_operands(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op in COMMUTATIVE and keys[inputs[1]] < keys[inputs[0]]:
            return rebuild(node, (inputs[1], inputs[0]))
        return None

    return rewrite(graph, order_operands)
