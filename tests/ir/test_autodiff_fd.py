"""Every VJP rule in ``ir.autodiff`` against central finite differences, in float64.

Each case builds one primitive on buffer leaves, asks ``autodiff.backward`` for the gradient of
``sum(node * r)`` (``r`` a fixed random seed) and compares it, evaluated by the interpreter, with
``(f(x + eps) - f(x - eps)) / 2 eps`` taken element by element.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import fusegrad.tracer.recurrent  # noqa: F401 (registers the "rnn" macro)
from fusegrad.backends.interpreter import evaluate
from fusegrad.ir import autodiff, ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.macro import macro
from fusegrad.ir.node import Node

EPS = {"float64": 1e-6, "float32": 1e-2}


@dataclass(frozen=True)
class Rule:
    """``build(*leaves)`` returns a node whose op is ``op``; ``inputs`` are the leaves' values."""

    name: str
    op: str
    build: Callable[..., Node]
    inputs: tuple[np.ndarray, ...]
    rtol: float = 1e-6
    atol: float = 1e-8
    eps: float | None = None  # step; by default EPS of the input's dtype


_rng = np.random.default_rng(0)


def normal(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape)


def positive(*shape: int) -> np.ndarray:
    return _rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape: int) -> np.ndarray:
    x = _rng.uniform(0.5, 2.0, shape)
    return np.where(_rng.random(shape) < 0.5, -x, x)


def distinct(*shape: int) -> np.ndarray:
    """Values at least 0.1 apart, so that max/min have a unique winner under perturbation."""
    return (_rng.permutation(int(np.prod(shape))) * 0.1 - 0.5).reshape(shape)


def _unary(op: str) -> Callable[[Node], Node]:
    return lambda x: ops.unary(op, x)


def _binary(op: str) -> Callable[[Node, Node], Node]:
    return lambda a, b: ops.binary(op, a, b)


def _pad(x: Node) -> Node:
    return ops.pad(x, (5, 7), ((1, 2), (0, 3)))


# ties: exactly two tied entries, where a one-sided step moves the max by half the step
_MAX_TIES = np.array([[0.3, 0.3, -1.0], [0.5, 2.0, 2.0]])
_INDEX = np.array([[2, 0, 1, 1], [0, 0, 2, 1]], dtype=np.int64)

RULES = [
    Rule("neg", "neg", _unary("neg"), (normal(2, 3),)),
    Rule("exp", "exp", _unary("exp"), (normal(2, 3),)),
    Rule("log", "log", _unary("log"), (positive(2, 3),)),
    Rule("sqrt", "sqrt", _unary("sqrt"), (positive(2, 3),)),
    Rule("recip", "recip", _unary("recip"), (away_from_zero(2, 3),)),
    Rule("sin", "sin", _unary("sin"), (normal(2, 3),)),
    Rule("cos", "cos", _unary("cos"), (normal(2, 3),)),
    Rule("tanh", "tanh", _unary("tanh"), (normal(2, 3),)),
    Rule("abs", "abs", _unary("abs"), (away_from_zero(2, 3),)),
    # at 0 the central difference is 0, which is what the rule gives (as torch does)
    Rule("abs_at_zero", "abs", _unary("abs"), (np.array([[0.0, 1.5], [-2.0, 0.0]]),)),
    # float32 input: a wider step, and rounding of x +- eps to float32 costs ~1e-6 relative
    Rule("cast_f32_to_f64", "cast", lambda x: ops.cast(x, "float64"),
         (normal(2, 3).astype(np.float32),), rtol=1e-4, atol=1e-5),
    # a float32 step: the float32 output's rounding (~1e-7 * |x|) is divided by 2 eps = 2e-2
    Rule("cast_f64_to_f32", "cast", lambda x: ops.cast(ops.cast(x, "float32"), "float64"),
         (normal(2, 3),), rtol=1e-4, atol=1e-5, eps=1e-2),
    Rule("add", "add", _binary("add"), (normal(2, 3), normal(2, 3))),
    Rule("sub", "sub", _binary("sub"), (normal(2, 3), normal(2, 3))),
    Rule("mul", "mul", _binary("mul"), (normal(2, 3), normal(2, 3))),
    Rule("mul_same_input", "mul", lambda x: ops.binary("mul", x, x), (normal(2, 3),)),
    Rule("div", "div", _binary("div"), (normal(2, 3), away_from_zero(2, 3))),
    Rule("pow", "pow", _binary("pow"), (positive(2, 3), normal(2, 3))),
    Rule("pow_zero_base", "pow", _binary("pow"),
         (np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.7]]), np.array([[2.0, 3.0, 3.0], [2.0, 4.0, 0.5]]))),
    Rule("pow_zero_exponent", "pow", _binary("pow"), (positive(2, 3), np.zeros((2, 3)))),
    Rule("maximum", "maximum", _binary("maximum"), (distinct(2, 3), distinct(2, 3) + 0.05)),
    Rule("minimum", "minimum", _binary("minimum"), (distinct(2, 3), distinct(2, 3) + 0.05)),
    Rule("maximum_ties", "maximum", _binary("maximum"),
         (np.array([[1.0, 2.0, -1.0]]), np.array([[1.0, 0.5, -1.0]]))),
    Rule("minimum_ties", "minimum", _binary("minimum"),
         (np.array([[1.0, 2.0, -1.0]]), np.array([[1.0, 0.5, -1.0]]))),
    Rule("where", "where", lambda c, a, b: ops.where(c, a, b),
         (np.array([[True, False, True], [False, False, True]]), normal(2, 3), normal(2, 3))),
    Rule("sum_axis", "sum", lambda x: ops.reduce("sum", x, (1,)), (normal(2, 3, 4),)),
    Rule("sum_axes", "sum", lambda x: ops.reduce("sum", x, (0, 2)), (normal(2, 3, 4),)),
    Rule("max_axis", "max", lambda x: ops.reduce("max", x, (1,)), (distinct(2, 3, 4),)),
    Rule("max_axes", "max", lambda x: ops.reduce("max", x, (0, 2)), (distinct(2, 3, 4),)),
    Rule("max_two_way_ties", "max", lambda x: ops.reduce("max", x, (1,)), (_MAX_TIES,)),
    Rule("reshape", "reshape", lambda x: ops.reshape(x, (3, 2, 2)), (normal(2, 6),)),
    Rule("permute", "permute", lambda x: ops.permute(x, (2, 0, 1)), (normal(2, 3, 4),)),
    Rule("expand", "expand", lambda x: ops.expand(x, (2, 3, 4)), (normal(2, 1, 1),)),
    Rule("slice", "slice", lambda x: ops.slice_(x, ((1, 5, 2), (0, 6, 3))), (normal(5, 7),)),
    Rule("pad", "pad", _pad, (normal(2, 3),)),
    Rule("gather", "gather", lambda x, i: ops.gather(x, i, 0), (normal(3, 4), _INDEX)),
    Rule("scatter_add", "scatter_add", lambda i, s: ops.scatter_add(i, s, 0, (3, 4)),
         (_INDEX, normal(2, 4))),
    Rule("concat", "concat", lambda a, b, c: ops.concat((a, b, c), 1),
         (normal(2, 1, 3), normal(2, 2, 3), normal(2, 1, 3))),
    Rule("matmul_2d", "matmul", ops.matmul, (normal(3, 4), normal(4, 2))),
    Rule("matmul_3d", "matmul", ops.matmul, (normal(2, 3, 4), normal(2, 4, 2))),
    Rule("erf", "erf", _unary("erf"), (normal(2, 3) * 1.5,)),
    # a macro differentiates as its expansion: an RNN's time loop (tracer/recurrent.py) over
    # (time 3, batch 2, hidden 3) pre-activations, from h0, through W_hh
    Rule("macro_rnn", "macro", lambda x, h0, w_hh: macro(
        "rnn", [x, h0, w_hh], [((3, 2, 3), "float64"), ((2, 3), "float64")],
        ("RNN_TANH", 1, 1, (True, False, False), 0, 0, False, False))[0],
         (normal(3, 2, 3), normal(2, 3), normal(3, 3) * 0.5)),
]


def _leaf(array: np.ndarray) -> Node:
    arr = np.array(array, order="C")
    return ops.buffer(Buffer(arr.shape, arr.dtype.name, arr.reshape(-1)))


def _value(node: Node) -> np.ndarray:
    # evaluate() returns 0-d values with shape (1,); read them back in the node's shape
    return evaluate([node])[0].reshape(node.shape)


def test_every_differentiable_op_has_a_rule():
    missing = ops.ALL_OPS - autodiff.NON_DIFFERENTIABLE - set(autodiff.VJP)
    assert not missing, f"ops without a VJP rule: {sorted(missing)}"


def test_rules_are_for_known_ops():
    assert set(autodiff.VJP) <= ops.ALL_OPS


def test_every_rule_has_a_finite_difference_case():
    checked = {r.op for r in RULES} | {"detach"}  # detach is checked by test_detach_blocks_gradient
    assert set(autodiff.VJP) <= checked, sorted(set(autodiff.VJP) - checked)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_vjp_matches_finite_differences(rule: Rule):
    leaves = [_leaf(a) for a in rule.inputs]
    node = rule.build(*leaves)
    assert node.op == rule.op
    seed_value = np.random.default_rng(1).standard_normal(node.shape).astype(node.dtype)
    wrt = [leaf for leaf in leaves if leaf.dtype.startswith("float")]
    grads = autodiff.backward(node, _leaf(seed_value), wrt)
    assert set(grads) == set(wrt), "a float input got no gradient"

    def objective() -> float:
        return float(np.sum(_value(node).astype(np.float64) * seed_value))

    for leaf in wrt:
        g = grads[leaf]
        assert (g.shape, g.dtype) == (leaf.shape, leaf.dtype)
        data = leaf.attrs[0].data  # flat view of the leaf's storage: perturbed in place
        eps = rule.eps or EPS[leaf.dtype]
        numeric = np.empty(data.shape)
        for i in range(data.size):
            orig = data[i]
            data[i] = orig + eps
            up = objective()
            data[i] = orig - eps
            down = objective()
            data[i] = orig
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(_value(g).reshape(-1), numeric, rtol=rule.rtol, atol=rule.atol,
                                   err_msg=f"{rule.name}: gradient of input {leaves.index(leaf)}")


def test_detach_blocks_gradient():
    x = _leaf(normal(2, 3))
    y = ops.binary("add", ops.unary("detach", ops.unary("exp", x)), x)
    grads = autodiff.backward(y, _leaf(np.ones((2, 3))), [x])
    np.testing.assert_allclose(_value(grads[x]), np.ones((2, 3)))


def test_non_differentiable_ops_give_no_gradient():
    x = _leaf(normal(2, 3))
    cmp = ops.cast(ops.binary("lt", x, ops.const(0.0, (2, 3), "float64")), "float64")
    arg = ops.cast(ops.argmax(x, 1), "float64")
    assert autodiff.backward(cmp, _leaf(np.ones((2, 3))), [x]) == {}
    assert autodiff.backward(arg, _leaf(np.ones((2, 1))), [x]) == {}
