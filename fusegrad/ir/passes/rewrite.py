"""The bottom-up graph rewriter that every pass is written on.

A pass is a *rule*: ``rule(node, inputs)`` looks at ``node`` as if its inputs were ``inputs``
(the already rewritten operands) and returns a replacement node, or ``None`` when nothing applies.
The rule must build its replacement from ``inputs`` (never from ``node.inputs``, which belong to
the graph being rewritten) and the replacement must have ``node``'s shape and dtype.
"""
from __future__ import annotations

from collections.abc import Callable

from ..graph import Graph, toposort
from ..node import Node

Rule = Callable[[Node, tuple[Node, ...]], Node | None]

# A rule that keeps firing on its own output is a bug in the rule, not a slow graph.
MAX_RULE_STEPS = 64


def rebuild(node: Node, inputs: tuple[Node, ...]) -> Node:
    """``node`` with its inputs replaced by ``inputs`` (the same node when nothing changed).

    Args:
        node: the node to copy op, shape, dtype, attrs and source location from.
        inputs: the new inputs, one per input of ``node``.
    """
    if inputs == node.inputs:
        return node
    return Node(node.op, inputs, node.shape, node.dtype, node.attrs, node.loc)


def _apply(rule: Rule, node: Node, inputs: tuple[Node, ...]) -> Node:
    current, current_inputs = node, inputs
    for _ in range(MAX_RULE_STEPS):
        replacement = rule(current, current_inputs)
        if replacement is None:
            return rebuild(current, current_inputs)
        if replacement.shape != node.shape or replacement.dtype != node.dtype:
            raise ValueError(f"rewrite rule {getattr(rule, '__name__', rule)} replaced {node!r} "
                             f"by {replacement!r} of another type")
        current, current_inputs = replacement, replacement.inputs
    raise RuntimeError(f"rewrite rule {getattr(rule, '__name__', rule)} did not settle on {node!r}")


def rewrite(graph: Graph, rule: Rule, order: list[Node] | None = None) -> Graph:
    """Rebuild ``graph`` bottom-up, applying ``rule`` to every node until it returns ``None``.

    Each node is visited once (the result is memoised), after all of its inputs; the rule is then
    applied to the node over its rewritten inputs, and again to each replacement it returns.

    Args:
        graph: the graph to rewrite; it is left unchanged.
        rule: ``rule(node, inputs) -> Node | None`` as described in the module docstring.
        order: ``toposort(graph.outputs)`` when the caller has it already.

    Returns:
        A graph with the rewritten outputs in the same order, and ``graph.names`` carried over to
        them (when two named outputs become one node, the first name is kept).
    """
    done: dict[Node, Node] = {}
    for node in toposort(graph.outputs) if order is None else order:
        done[node] = _apply(rule, node, tuple(done[i] for i in node.inputs))
    names: dict[Node, str] = {}
    for old, name in graph.names.items():
        if old in done:
            names.setdefault(done[old], name)
    return Graph(tuple(done[o] for o in graph.outputs), names)
