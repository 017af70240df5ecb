"""Algebraic simplification: identities that hold for every value, NaN and inf included.

``x * 0`` is not folded to 0 (it is NaN for NaN and inf), nor ``x - x`` to 0, for that reason.
The one exception is the sign of zero: ``x + 0`` becomes ``x``, though ``-0.0 + 0.0`` is ``+0.0``.
"""
from __future__ import annotations

from .. import ops
from ..graph import Graph
from ..node import Node
from .rewrite import rewrite


def _is_const(node: Node, value: float) -> bool:
    return node.op == "const" and node.attrs[0] == value


def _simplify_binary(node: Node, a: Node, b: Node) -> Node | None:
    op = node.op
    if op == "mul" and _is_const(b, 1):
        return a
    if op == "mul" and _is_const(a, 1):
        return b
    if op == "add" and _is_const(b, 0):
        return a
    if op == "add" and _is_const(a, 0):
        return b
    if op in ("sub", "div", "pow") and _is_const(b, 0 if op == "sub" else 1):
        return a
    if op == "pow" and _is_const(b, 2):
        return ops.binary("mul", a, a, node.loc)
    return None


def fold_reshape_chain(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """A rule (``fusegrad.ir.passes.rewrite``): ``reshape(reshape(x))`` is one ``reshape(x)``."""
    if node.op == "reshape" and inputs[0].op == "reshape":
        return ops.reshape(inputs[0].inputs[0], node.shape, node.loc)
    return None


def reduction_over_unit_axes(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """A rule (``fusegrad.ir.passes.rewrite``): ``sum``/``max`` over size-1 axes only is its
    input, ``argmax`` over a size-1 axis is 0."""
    if node.op in ("sum", "max") and all(inputs[0].shape[a] == 1 for a in node.attrs[0]):
        return inputs[0]
    if node.op == "argmax" and inputs[0].shape[node.attrs[0]] == 1:
        return ops.const(0, node.shape, "int64", node.loc)
    return None


def _simplify_movement(node: Node, x: Node) -> Node | None:
    op = node.op
    if op == "permute":
        perm = node.attrs[0]
        if x.op == "permute":
            inner = x.attrs[0]
            return ops.permute(x.inputs[0], tuple(inner[p] for p in perm), node.loc)
        return x if perm == tuple(range(len(perm))) else None
    if node.shape == x.shape:  # a reshape, expand, slice or pad that keeps the shape is the identity
        return x
    if op == "reshape":
        return fold_reshape_chain(node, (x,))
    if op == "expand" and x.op == "expand":
        return ops.expand(x.inputs[0], node.shape, node.loc)
    if op == "expand" and x.op == "const":
        return ops.const(x.attrs[0], node.shape, node.dtype, node.loc)
    return None


def _simplify(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    op = node.op
    if op in ("add", "sub", "mul", "div", "pow"):
        return _simplify_binary(node, *inputs)
    if op in ("reshape", "permute", "expand", "slice", "pad"):
        return _simplify_movement(node, inputs[0])
    if op == "neg" and inputs[0].op == "neg":
        return inputs[0].inputs[0]
    if op == "cast" and inputs[0].dtype == node.dtype:
        return inputs[0]
    if op in ("sum", "max", "argmax"):
        return reduction_over_unit_axes(node, inputs)
    if op == "where" and inputs[1] is inputs[2]:
        return inputs[1]
    return None


def algebraic_simplification(graph: Graph) -> Graph:
    """Remove identities and merge chains of movement ops.

    Rewrites ``x*1``, ``1*x``, ``x+0``, ``0+x``, ``x-0``, ``x/1``, ``x**1`` to ``x``; ``x**2`` to
    ``x*x``; ``-(-x)`` to ``x``; reshape of reshape, expand of expand and permute of permute to
    one op (or none when the result is the identity); movement ops and casts that change nothing
    away; ``sum``/``max`` over size-1 axes to their input, ``argmax`` over a size-1 axis to 0;
    ``where(c, x, x)`` to ``x``; ``expand`` of a const to a const.

    Args:
        graph: the graph to simplify; it is left unchanged.
    """
    return rewrite(graph, _simplify)
