"""Rows of the op table: elementwise primitives (unary, binary, ``where``), with their VJPs.

Elementwise ops take operands of one shape and dtype; broadcasting (``expand``) and type
promotion (``cast``) are explicit nodes put in by the tracer.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..dtypes import is_float, to_numpy
from ..node import Node
from .build import const_like, mul
from .spec import (ANY, FLOAT, INTEGER_AND_BOOL, NOT_DIFFERENTIABLE, Category, Grads, OpSpec,
                   declare, elementwise_reference)

E = Category.ELEMENTWISE


def _cast(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return args[0].astype(to_numpy(node.dtype), copy=False)


def _div(node: Node, args: list[np.ndarray]) -> np.ndarray:
    if not is_float(node.dtype):
        raise TypeError("integer div reaches the IR only through a cast to float")
    return np.true_divide(args[0], args[1])


def _pow(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """``a ** b``; float32 through float64, rounded once: numpy's vectorised float32 power is
    off by an ulp at times (``1.1890624 ** 1.0`` gives 1.1890622), where the kernels' ``powf``
    and the simplification ``x ** 1 -> x`` are exact."""
    a, b = args
    if node.dtype == "float32":
        return np.power(np.asarray(a, np.float64), np.asarray(b, np.float64)).astype(np.float32)
    return np.asarray(np.power(a, b))


def _abs_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    loc = n.loc
    zero = const_like(x, 0.0)
    sign = ops.where(ops.binary("lt", zero, x, loc), const_like(x, 1.0),
                     ops.where(ops.binary("lt", x, zero, loc), const_like(x, -1.0), zero, loc),
                     loc)
    return (mul(g, sign),)


def _erf(node: Node, args: list[np.ndarray]) -> np.ndarray:
    import scipy.special  # here, not at the top: importing it takes ~0.6 s and only erf needs it

    return scipy.special.erf(args[0])


def _erf_grads(n: Node, g: Node) -> Grads:
    (x,) = n.inputs
    loc = n.loc
    density = ops.unary("exp", ops.unary("neg", mul(x, x), loc), loc)
    return (mul(g, mul(const_like(x, 2 / math.sqrt(math.pi)), density)),)


def _pow_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    loc = n.loc
    exp_m1 = ops.binary("sub", b, const_like(b, 1.0), loc)
    da = mul(g, mul(b, ops.binary("pow", a, exp_m1, loc)))
    da = ops.where(ops.binary("eq", b, const_like(b, 0.0), loc), const_like(g, 0.0), da, loc)
    # d/db a**b = a**b * log(a), defined as 0 where a == 0 and b >= 0 (as torch does)
    db = mul(g, mul(n, ops.unary("log", a, loc)))
    at_zero = ops.binary("eq", a, const_like(a, 0.0), loc)
    db = ops.where(at_zero, const_like(g, 0.0), db, loc)
    return da, db


def _select_grads(n: Node, g: Node, a_loses: Node, b_loses: Node) -> Grads:
    """maximum/minimum as torch defines them: each side takes the gradient unless it loses, ties
    split it evenly. Where a NaN meets a number neither loses, so both take it."""
    a, b = n.inputs
    loc = n.loc
    half = mul(g, const_like(g, 0.5))
    tie = ops.binary("eq", a, b, loc)
    zero = const_like(g, 0.0)
    return (ops.where(tie, half, ops.where(a_loses, zero, g, loc), loc),
            ops.where(tie, half, ops.where(b_loses, zero, g, loc), loc))


def _maximum_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    return _select_grads(n, g, ops.binary("lt", a, b, n.loc), ops.binary("lt", b, a, n.loc))


def _minimum_grads(n: Node, g: Node) -> Grads:
    a, b = n.inputs
    return _select_grads(n, g, ops.binary("lt", b, a, n.loc), ops.binary("lt", a, b, n.loc))


def _where_grads(n: Node, g: Node) -> Grads:
    cond = n.inputs[0]
    zero = const_like(g, 0.0)
    return None, ops.where(cond, g, zero, n.loc), ops.where(cond, zero, g, n.loc)


def _compare(name: str, fn: np.ufunc, commutative: frozenset[str] = frozenset()) -> OpSpec:
    return OpSpec(name, 2, E, ANY, "bool", elementwise_reference(fn), NOT_DIFFERENTIABLE,
                  commutative)


declare(
    # unary
    OpSpec("neg", 1, E, ANY, "same", elementwise_reference(np.negative),
           lambda n, g: (ops.unary("neg", g, n.loc),)),
    OpSpec("exp", 1, E, FLOAT, "same", elementwise_reference(np.exp),
           lambda n, g: (mul(g, n),), api="exp"),
    OpSpec("log", 1, E, FLOAT, "same", elementwise_reference(np.log),
           lambda n, g: (ops.binary("div", g, n.inputs[0], n.loc),), api="log"),
    OpSpec("sqrt", 1, E, FLOAT, "same", elementwise_reference(np.sqrt),
           lambda n, g: (ops.binary("div", mul(g, const_like(g, 0.5)), n, n.loc),), api="sqrt"),
    OpSpec("recip", 1, E, FLOAT, "same", elementwise_reference(np.reciprocal),
           lambda n, g: (ops.unary("neg", mul(g, mul(n, n)), n.loc),)),
    OpSpec("sin", 1, E, FLOAT, "same", elementwise_reference(np.sin),
           lambda n, g: (mul(g, ops.unary("cos", n.inputs[0], n.loc)),), api="sin"),
    OpSpec("cos", 1, E, FLOAT, "same", elementwise_reference(np.cos),
           lambda n, g: (ops.unary("neg", mul(g, ops.unary("sin", n.inputs[0], n.loc)), n.loc),),
           api="cos"),
    OpSpec("tanh", 1, E, FLOAT, "same", elementwise_reference(np.tanh),
           lambda n, g: (mul(g, ops.binary("sub", const_like(n, 1.0), mul(n, n), n.loc)),),
           api="tanh"),
    OpSpec("erf", 1, E, FLOAT, "same", _erf, _erf_grads, api="erf"),
    OpSpec("abs", 1, E, ANY, "same", elementwise_reference(np.abs), _abs_grads),
    OpSpec("cast", 1, E, ANY, "given", _cast,
           lambda n, g: (ops.cast(g, n.inputs[0].dtype, n.loc),)),
    OpSpec("detach", 1, E, ANY, "same", _cast, NOT_DIFFERENTIABLE),
    # binary
    OpSpec("add", 2, E, ANY, "same", elementwise_reference(np.add),
           lambda n, g: (g, g), commutative=ANY),
    OpSpec("sub", 2, E, ANY, "same", elementwise_reference(np.subtract),
           lambda n, g: (g, ops.unary("neg", g, n.loc))),
    OpSpec("mul", 2, E, ANY, "same", elementwise_reference(np.multiply),
           lambda n, g: (mul(g, n.inputs[1]), mul(g, n.inputs[0])), commutative=ANY),
    OpSpec("div", 2, E, ANY, "same", _div,
           lambda n, g: (ops.binary("div", g, n.inputs[1], n.loc),
                         ops.unary("neg", ops.binary("div", mul(g, n), n.inputs[1], n.loc),
                                   n.loc))),
    OpSpec("pow", 2, E, ANY, "same", _pow, _pow_grads),
    # float maximum/minimum are not commutative: maximum(0.0, -0.0) is 0.0 and
    # maximum(-0.0, 0.0) is -0.0, and the first of two NaNs comes out
    OpSpec("maximum", 2, E, ANY, "same", elementwise_reference(np.maximum), _maximum_grads,
           commutative=INTEGER_AND_BOOL),
    OpSpec("minimum", 2, E, ANY, "same", elementwise_reference(np.minimum), _minimum_grads,
           commutative=INTEGER_AND_BOOL),
    _compare("lt", np.less),
    _compare("le", np.less_equal),
    _compare("eq", np.equal, commutative=ANY),
    _compare("ne", np.not_equal, commutative=ANY),
    # ternary
    OpSpec("where", 3, E, ANY, "same", elementwise_reference(np.where), _where_grads),
)
