"""Reverse-mode autodiff on the IR, driven by the VJP rules of the op table (``ir/optable``).

A rule takes the node, the gradient of the node's output (same shape and dtype) and returns one
gradient (or None) per input. Gradients are IR, so backward fuses like the forward pass.

``Tensor.backward`` may defer the work: it leaves one ``grad(root, seed, leaf)`` node per leaf
(``ops.grad``), and the backward graph is built by ``expand_gradients`` only when a program is
compiled for it. A step whose graph repeats then finds its program by the key of the forward
graph alone and never builds its backward graph again.
"""
from __future__ import annotations

from collections.abc import Callable

from . import ops
from .dtypes import is_float
from .graph import Graph, substitute, toposort
from .macro import MACRO, expand_macros
from .node import Node
from .optable import TABLE, NotDifferentiable

Grads = tuple[Node | None, ...]

# Views of the table: the rules by op, and the ops whose output carries no gradient.
VJP: dict[str, Callable[[Node, Node], Grads]] = {
    name: spec.vjp for name, spec in TABLE.items() if not isinstance(spec.vjp, NotDifferentiable)}
NON_DIFFERENTIABLE = frozenset(name for name, spec in TABLE.items() if not spec.differentiable)


def differentiable(node: Node) -> bool:
    return node.op in VJP and is_float(node.dtype)


def _active(wrt: list[Node], order: list[Node]) -> set[Node]:
    """The nodes a gradient may flow through: ``wrt`` and every differentiable node reading one."""
    targets = set(wrt)
    active: set[Node] = set()
    add, reads_none = active.add, active.isdisjoint   # bound once: this runs on every backward()
    for n in order:
        if n in targets or (not reads_none(n.inputs) and differentiable(n)):
            add(n)
    return active


def reached(root: Node, wrt: list[Node], order: list[Node]) -> list[Node]:
    """The nodes of ``wrt`` that ``backward(root, seed, wrt)`` gives a gradient, found without
    building one: those from which a path of active nodes leads to ``root`` (a VJP rule gives
    no gradient only to integer or bool operands, which are never active)."""
    active = _active(wrt, order)
    if root not in active:
        return []
    flows = {root}
    add = flows.add
    for n in reversed(order):
        if n in flows:
            for i in n.inputs:
                if i in active:
                    add(i)
    return [w for w in wrt if w in flows]


def expand_gradients(outputs: list[Node] | tuple[Node, ...]) -> list[Node]:
    """``outputs`` with every macro expanded (``ir/macro.py``) and every deferred
    ``grad(root, seed, leaf)`` node (``ops.grad``) replaced by its gradient graph: one
    ``backward`` per (root, seed) for all of its leaves, as an eager ``backward()`` would have
    built it. The same list when there is neither."""
    order = toposort(list(outputs))
    if any(n.op == MACRO for n in order):
        outputs = expand_macros(outputs)
        order = toposort(outputs)
    deferred = [n for n in order if n.op == "grad"]
    if not deferred:
        return list(outputs)
    groups: dict[tuple[Node, Node], list[Node]] = {}
    for n in deferred:
        groups.setdefault(n.inputs[:2], []).append(n)
    replace: dict[Node, Node] = {}
    for (root, seed), nodes in groups.items():
        leaves = list(dict.fromkeys(n.inputs[2] for n in nodes))
        grads = backward(root, seed, leaves)
        for n in nodes:
            g = grads.get(n.inputs[2])
            replace[n] = g if g is not None else ops.const(0.0, n.shape, n.dtype, n.loc)
    return substitute(list(outputs), replace)


def expand_graph(graph: Graph) -> Graph:
    """``graph`` with its deferred gradients expanded (``expand_gradients``), output names kept;
    ``graph`` itself when it has none."""
    expanded = expand_gradients(graph.outputs)
    if all(a is b for a, b in zip(expanded, graph.outputs)):
        return graph
    return Graph(tuple(expanded), {new: graph.names[old] for old, new in
                                   zip(graph.outputs, expanded) if old in graph.names})


def backward(root: Node, seed: Node, wrt: list[Node], order: list[Node] | None = None
             ) -> dict[Node, Node]:
    """Gradients of ``root`` (weighted by ``seed``) with respect to each node in ``wrt``.

    Only nodes on a path from a ``wrt`` node to ``root`` that does not cross a non-differentiable
    op (comparisons, argmax, detach, casts to integers) are differentiated. ``order``:
    ``toposort([root])`` when the caller has it already.
    """
    order = toposort([root]) if order is None else order
    if any(n.op == MACRO for n in order):   # differentiate the subgraphs the macros stand for
        expanded = expand_macros([root, *wrt])
        grads = backward(expanded[0], seed, expanded[1:])
        return {w: grads[e] for w, e in zip(wrt, expanded[1:]) if e in grads}
    active = _active(wrt, order)
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
