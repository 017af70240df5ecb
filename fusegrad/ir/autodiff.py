"""Reverse-mode autodiff on the IR: one VJP rule per primitive, in one table.

A rule takes the node, the gradient of the node's output (same shape and dtype) and returns one
gradient (or None) per input. Gradients are IR, so backward fuses like the forward pass.
"""
from __future__ import annotations

from collections.abc import Callable

from . import ops
from .graph import toposort
from .node import Node

Grads = tuple[Node | None, ...]


def _c(like: Node, value: float) -> Node:
    return ops.const(value, like.shape, like.dtype, like.loc)


def _mul(a: Node, b: Node) -> Node:
    return ops.binary("mul", a, b, a.loc)


def _zeros_where(cond: Node, g: Node) -> Node:
    return ops.where(cond, g, _c(g, 0.0), g.loc)


def _reduce_to(g: Node, shape: tuple[int, ...]) -> Node:
    """Sum ``g`` over the axes that were broadcast from size 1 to reach its shape."""
    axes = tuple(i for i, (s, d) in enumerate(zip(shape, g.shape)) if s == 1 and d != 1)
    return ops.reduce("sum", g, axes, g.loc) if axes else g


def _transpose_last(x: Node) -> Node:
    perm = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
    return ops.permute(x, perm, x.loc)


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _pow_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    loc = n.loc
    exp_m1 = ops.binary("sub", b, _c(b, 1.0), loc)
    da = _mul(g, _mul(b, ops.binary("pow", a, exp_m1, loc)))
    da = ops.where(ops.binary("eq", b, _c(b, 0.0), loc), _c(g, 0.0), da, loc)
    # d/db a**b = a**b * log(a), defined as 0 where a == 0 and b >= 0 (as torch does)
    db = _mul(g, _mul(n, ops.unary("log", a, loc)))
    at_zero = ops.binary("eq", a, _c(a, 0.0), loc)
    db = ops.where(at_zero, _c(g, 0.0), db, loc)
    return da, db


def _select_grads(n: Node, g: Node, a_loses: Node, b_loses: Node) -> Grads:
    """maximum/minimum as torch defines them: each side takes the gradient unless it loses, ties
    split it evenly. Where a NaN meets a number neither loses, so both take it."""
    a, b = n.inputs
    loc = n.loc
    half = _mul(g, _c(g, 0.5))
    tie = ops.binary("eq", a, b, loc)
    zero = _c(g, 0.0)
    return (ops.where(tie, half, ops.where(a_loses, zero, g, loc), loc),
            ops.where(tie, half, ops.where(b_loses, zero, g, loc), loc))


def _maximum_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    return _select_grads(n, g, ops.binary("lt", a, b, n.loc), ops.binary("lt", b, a, n.loc))


def _minimum_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    return _select_grads(n, g, ops.binary("lt", b, a, n.loc), ops.binary("lt", a, b, n.loc))


def _max_reduce_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    loc = n.loc
    hit = ops.cast(ops.binary("eq", x, ops.expand(n, x.shape, loc), loc), x.dtype, loc)
    count = ops.reduce("sum", hit, n.attrs[0], loc)
    share = ops.binary("div", g, count, loc)
    return (_mul(hit, ops.expand(share, x.shape, loc)),)


def _abs_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    loc = n.loc
    zero = _c(x, 0.0)
    sign = ops.where(ops.binary("lt", zero, x, loc), _c(x, 1.0),
                     ops.where(ops.binary("lt", x, zero, loc), _c(x, -1.0), zero, loc), loc)
    return (_mul(g, sign),)


def _slice_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    placement = tuple((start, step) for start, _, step in n.attrs[0])
    return (ops.pad(g, x.shape, placement, n.loc),)


def _pad_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    ranges = tuple((start, start + (size - 1) * step + 1 if size else start, step)
                   for (start, step), size in zip(n.attrs[0], x.shape))
    return (ops.slice_(g, ranges, n.loc),)


VJP: dict[str, Callable[[Node, Node], Grads]] = {
    "neg": lambda n, g: (ops.unary("neg", g, n.loc),),
    "exp": lambda n, g: (_mul(g, n),),
    "log": lambda n, g: (ops.binary("div", g, n.inputs[0], n.loc),),
    "sqrt": lambda n, g: (ops.binary("div", _mul(g, _c(g, 0.5)), n, n.loc),),
    "recip": lambda n, g: (ops.unary("neg", _mul(g, _mul(n, n)), n.loc),),
    "sin": lambda n, g: (_mul(g, ops.unary("cos", n.inputs[0], n.loc)),),
    "cos": lambda n, g: (ops.unary("neg", _mul(g, ops.unary("sin", n.inputs[0], n.loc)), n.loc),),
    "tanh": lambda n, g: (_mul(g, ops.binary("sub", _c(n, 1.0), _mul(n, n), n.loc)),),
    "abs": _abs_grads,
    "cast": lambda n, g: (ops.cast(g, n.inputs[0].dtype, n.loc),),
    "detach": lambda n, g: (None,),
    "add": lambda n, g: (g, g),
    "sub": lambda n, g: (g, ops.unary("neg", g, n.loc)),
    "mul": lambda n, g: (_mul(g, n.inputs[1]), _mul(g, n.inputs[0])),
    "div": lambda n, g: (ops.binary("div", g, n.inputs[1], n.loc),
                         ops.unary("neg", ops.binary("div", _mul(g, n), n.inputs[1], n.loc), n.loc)),
    "pow": _pow_grads,
    "maximum": _maximum_grads,
    "minimum": _minimum_grads,
    "where": lambda n, g: (None, _zeros_where(n.inputs[0], g),
                           ops.where(n.inputs[0], _c(g, 0.0), g, n.loc)),
    "sum": lambda n, g: (ops.expand(g, n.inputs[0].shape, n.loc),),
    "max": _max_reduce_grads,
    "reshape": lambda n, g: (ops.reshape(g, n.inputs[0].shape, n.loc),),
    "permute": lambda n, g: (ops.permute(g, _inverse(n.attrs[0]), n.loc),),
    "expand": lambda n, g: (_reduce_to(g, n.inputs[0].shape),),
    "slice": _slice_grads,
    "pad": _pad_grads,
    "gather": lambda n, g: (ops.scatter_add(n.inputs[1], g, n.attrs[0], n.inputs[0].shape, n.loc),
                            None),
    "scatter_add": lambda n, g: (None, ops.gather(g, n.inputs[0], n.attrs[0], n.loc)),
    "matmul": lambda n, g: (ops.matmul(g, _transpose_last(n.inputs[1]), n.loc),
                            ops.matmul(_transpose_last(n.inputs[0]), g, n.loc)),
}

# Ops whose output carries no gradient (integer/bool results or piecewise-constant functions).
NON_DIFFERENTIABLE = frozenset({"lt", "le", "eq", "ne", "argmax", "const", "rand", "buffer",
                                "detach"})


def differentiable(node: Node) -> bool:
    if node.op in NON_DIFFERENTIABLE:
        return False
    return node.dtype in ("float32", "float64")


def backward(root: Node, seed: Node, wrt: list[Node]) -> dict[Node, Node]:
    """Gradients of ``root`` (weighted by ``seed``) with respect to each node in ``wrt``.

    Only nodes on a path from a ``wrt`` node to ``root`` that does not cross a non-differentiable
    op (comparisons, argmax, detach, casts to integers) are differentiated.
    """
    order = toposort([root])
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
