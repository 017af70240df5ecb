"""Structural keys: two graphs with equal keys compute the same thing from their buffer leaves."""
from __future__ import annotations

from .node import Node


def structural_key(outputs: list[Node] | tuple[Node, ...]) -> tuple[tuple, list[Node]]:
    """(key, leaves): a hashable description of the graph in which each buffer leaf is replaced
    by its position in ``leaves`` (leaves in order of first appearance, inputs before users)."""
    index: dict[Node, int] = {}
    leaves: list[Node] = []
    items: list[tuple] = []
    stack: list[tuple[Node, int]] = [(o, 0) for o in reversed(outputs)]
    while stack:
        node, i = stack.pop()
        if node in index:
            continue
        if i < len(node.inputs):
            stack.append((node, i + 1))
            child = node.inputs[i]
            if child not in index:
                stack.append((child, 0))
            continue
        index[node] = len(items)
        if node.op == "buffer":
            items.append(("buffer", node.shape, node.dtype, len(leaves)))
            leaves.append(node)
        else:
            items.append((node.op, node.shape, node.dtype, node.attrs,
                          tuple(index[x] for x in node.inputs)))
    items.append(tuple(index[o] for o in outputs))
    return tuple(items), leaves
