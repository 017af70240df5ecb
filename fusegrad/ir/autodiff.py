"""Reverse-mode autodiff on the IR, driven by the VJP rules of the op table (``ir/optable``).

A rule takes the node, the gradient of the node's output (same shape and dtype) and returns one
gradient (or None) per input. Gradients are IR, so backward fuses like the forward pass.
"""
from __future__ import annotations

from collections.abc import Callable

from . import ops
from .graph import toposort
from .node import Node
from .optable import TABLE, NotDifferentiable

Grads = tuple[Node | None, ...]

# Views of the table: the rules by op, and the ops whose output carries no gradient.
VJP: dict[str, Callable[[Node, Node], Grads]] = {
    name: spec.vjp for name, spec in TABLE.items() if not isinstance(spec.vjp, NotDifferentiable)}
NON_DIFFERENTIABLE = frozenset(name for name, spec in TABLE.items() if not spec.differentiable)


def differentiable(node: Node) -> bool:
    if not TABLE[node.op].differentiable:
        return False
    return node.dtype in ("float32", "float64")


def backward(root: Node, seed: Node, wrt: list[Node], order: list[Node] | None = None
             ) -> dict[Node, Node]:
    """Gradients of ``root`` (weighted by ``seed``) with respect to each node in ``wrt``.

    Only nodes on a path from a ``wrt`` node to ``root`` that does not cross a non-differentiable
    op (comparisons, argmax, detach, casts to integers) are differentiated. ``order``:
    ``toposort([root])`` when the caller has it already.
    """
    order = toposort([root]) if order is None else order
    targets = set(wrt)
    active: set[Node] = set()
    for n in order:
        if n in targets or (differentiable(n) and any(i in active for i in n.inputs)):
            active.add(n)
    grads: dict[Node, Node] = {}
    if root not in active:
        return {}
    grads[root] = seed
    for n in reversed(order):
        g = grads.get(n)
        if g is None or not n.inputs:
            continue
        for inp, gi in zip(n.inputs, VJP[n.op](n, g)):
            if gi is None or inp not in active:
                continue
            prev = grads.get(inp)
            grads[inp] = gi if prev is None else ops.binary("add", prev, gi, inp.loc)
    return {w: grads[w] for w in wrt if w in grads}
