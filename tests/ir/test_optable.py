"""The op table (``ir/optable``): every primitive has every part, and everything reads it.

Each row must have its table fields, run on the interpreter (its numpy reference), have a
numba_cpu expression when elementwise, have a VJP or the explicit not-differentiable marker,
and, when it names a public api, be reachable as ``fusegrad.<api>`` and ``Tensor.<api>``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from parity import using_backend

import fusegrad
from fusegrad.backends.interpreter import eval_node, evaluate
from fusegrad.backends.numba_cpu.scalar_ops import EXPRESSIONS
from fusegrad.backends.pipeline import compile_graph
from fusegrad.ir import autodiff, macro, ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.dtypes import DTYPES, is_float
from fusegrad.ir.graph import Graph
from fusegrad.ir.node import Node
from fusegrad.ir.optable import (NOT_DIFFERENTIABLE, TABLE, VARIADIC, Category, OpSpec,
                                 is_commutative, user_facing)
from fusegrad.ir.passes import constant_folding
from fusegrad.tracer.primitives import FUNCTIONS

ELEMENTWISE = sorted(n for n, s in TABLE.items() if s.category is Category.ELEMENTWISE)


def _leaf(array: np.ndarray) -> Node:
    arr = np.array(array, order="C")
    return ops.buffer(Buffer(arr.shape, arr.dtype.name, arr.reshape(-1)))


def _sample(dtype: str, rng: np.random.Generator, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if is_float(dtype):
        return rng.uniform(0.25, 2.0, shape).astype(dtype)  # in every float op's domain
    return rng.integers(1, 4, shape).astype(dtype)


def _operand_dtype(spec: OpSpec) -> str:
    """The dtype to try an elementwise op on: float64 where it accepts floats, else its first."""
    return "float64" if "float64" in spec.accepts else sorted(spec.accepts)[0]


def _elementwise_node(spec: OpSpec, operand: Callable[[str], Node]) -> Node:
    """A node of the elementwise op ``spec`` on operands made by ``operand(dtype)``."""
    dtype = _operand_dtype(spec)
    if spec.name == "cast":
        return ops.cast(operand(dtype), "int32")
    if spec.name == "where":
        return ops.where(operand("bool"), operand(dtype), operand(dtype))
    if spec.arity == 1:
        return ops.unary(spec.name, operand(dtype))
    return ops.binary(spec.name, operand(dtype), operand(dtype))


# one node of every op that is not elementwise, on (2, 3) float64 leaves
_X = np.arange(6, dtype=np.float64).reshape(2, 3) / 4 + 0.5
_INDEX = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.int64)
_KEY = np.array([7, 0], dtype=np.int64)
def _deferred_grad() -> Node:
    leaf = _leaf(_X)
    root = ops.reduce("sum", ops.binary("mul", leaf, leaf), (0, 1))
    return ops.grad(root, ops.const(1.0, root.shape, "float64"), leaf)


def _macro() -> Node:
    macro.register("test_square_plus", lambda inputs, params, loc: [
        ops.binary("add", ops.binary("mul", inputs[0], inputs[0]),
                   ops.const(params[0], inputs[0].shape, inputs[0].dtype))])
    return macro.macro("test_square_plus", [_leaf(_X)], [((2, 3), "float64")], (0.5,))[0]


NON_ELEMENTWISE_SAMPLES: dict[str, Callable[[], Node]] = {
    "buffer": lambda: _leaf(_X),
    "const": lambda: ops.const(1.5, (2, 3), "float64"),
    "rand": lambda: ops.rand(_leaf(_KEY), (2, 3), "float64"),
    "sum": lambda: ops.reduce("sum", _leaf(_X), (1,)),
    "max": lambda: ops.reduce("max", _leaf(_X), (0,)),
    "argmax": lambda: ops.argmax(_leaf(_X), 1),
    "reshape": lambda: ops.reshape(_leaf(_X), (3, 2)),
    "permute": lambda: ops.permute(_leaf(_X), (1, 0)),
    "expand": lambda: ops.expand(_leaf(_X[:1]), (2, 3)),
    "slice": lambda: ops.slice_(_leaf(_X), ((0, 2, 1), (1, 3, 1))),
    "pad": lambda: ops.pad(_leaf(_X), (3, 4), ((1, 1), (0, 1))),
    "gather": lambda: ops.gather(_leaf(_X), _leaf(_INDEX), 0),
    "scatter_add": lambda: ops.scatter_add(_leaf(_INDEX), _leaf(_X), 0, (2, 3)),
    "matmul": lambda: ops.matmul(_leaf(_X), _leaf(_X.T.copy())),
    "concat": lambda: ops.concat((_leaf(_X), _leaf(_X[:1].copy()), _leaf(_X)), 0),
    "allreduce": lambda: ops.allreduce(_leaf(_X)),
    "grad": _deferred_grad,
    "macro": _macro,
    "assign": lambda: ops.assign(_leaf(_X), ops.unary("neg", _leaf(_X[::-1].copy()))),
}
STORES = sorted(n for n, s in TABLE.items() if s.category is Category.STORE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_every_row_has_every_field(name: str):
    spec = TABLE[name]
    assert spec.name == name
    assert isinstance(spec.category, Category)
    assert isinstance(spec.arity, int) and (spec.arity >= 0 or spec.arity == VARIADIC)
    assert spec.accepts and spec.accepts <= set(DTYPES)
    assert spec.result in ("same", "bool", "int64", "given")
    assert callable(spec.reference)
    assert callable(spec.vjp) or spec.vjp is NOT_DIFFERENTIABLE
    assert spec.commutative <= spec.accepts
    assert not spec.commutative or spec.arity == 2


@pytest.mark.parametrize("name", sorted(TABLE))
def test_interpreter_runs_every_op(name: str):
    """Each op evaluates, from its table row, to an array of the node's shape and dtype."""
    spec = TABLE[name]
    if spec.category is Category.ELEMENTWISE:
        rng = np.random.default_rng(0)
        node = _elementwise_node(spec, lambda dtype: _leaf(_sample(dtype, rng)))
    else:
        assert name in NON_ELEMENTWISE_SAMPLES, f"add a sample node of {name!r} to this test"
        node = NON_ELEMENTWISE_SAMPLES[name]()
    assert node.op == name
    assert len(node.inputs) == spec.arity or spec.arity == VARIADIC
    (value,) = evaluate([node])
    assert value.shape == node.shape and value.dtype == np.dtype(node.dtype)


BACKENDS = ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", STORES)
def test_every_backend_writes_every_store_op(name: str, backend: str):
    """A store op's output is its target's own array, holding the value the reference computes."""
    node = NON_ELEMENTWISE_SAMPLES[name]()
    want = evaluate([node])[0].reshape(-1)
    target = node.inputs[0].attrs[0].data
    before = target.copy()
    compiled = compile_graph(Graph((node,)), backend)
    (got,) = compiled.program.run([leaf.attrs[0].data for leaf in compiled.inputs])
    assert got is target
    np.testing.assert_array_equal(target, want)
    assert not np.array_equal(before, want)


def test_numba_cpu_has_an_expression_for_every_elementwise_op():
    assert set(EXPRESSIONS) == set(ELEMENTWISE)


@pytest.mark.numba
def test_numba_cpu_computes_every_elementwise_op_as_the_interpreter():
    rng = np.random.default_rng(1)
    arrays: dict[Node, np.ndarray] = {}

    def operand(dtype: str) -> Node:
        array = _sample(dtype, rng)
        node = _leaf(array)
        arrays[node] = array
        return node

    outputs = [_elementwise_node(TABLE[name], operand) for name in ELEMENTWISE]
    compiled = compile_graph(Graph(tuple(outputs)), "numba_cpu")
    got = compiled.program.run([arrays[leaf].reshape(-1) for leaf in compiled.inputs])
    for name, node, value in zip(ELEMENTWISE, outputs, got):
        want = evaluate([node])[0]
        assert value.dtype == want.dtype, name
        np.testing.assert_allclose(value.reshape(node.shape), want, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", sorted(n for n in TABLE if TABLE[n].differentiable))
def test_autodiff_uses_the_table_rule(name: str):
    assert autodiff.VJP[name] is TABLE[name].vjp


@pytest.mark.parametrize("spec", user_facing(), ids=lambda s: s.name)
def test_user_facing_ops_reach_the_tracer(spec: OpSpec):
    function = FUNCTIONS[spec.api]
    assert getattr(fusegrad, spec.api) is function
    assert getattr(fusegrad.Tensor, spec.api) is function
    assert callable(getattr(fusegrad.Tensor, f"{spec.api}_"))
    x = fusegrad.tensor([0.5, 1.0], requires_grad=True)
    y = function(x)
    assert y.node.op == spec.name
    assert y.requires_grad == spec.differentiable


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_constant_folding_folds_every_elementwise_op(name: str):
    """Folding needs no entry per op: the table's reference computes the constant."""
    spec = TABLE[name]
    values = iter([1.25, 0.5, 0.75])
    node = _elementwise_node(
        spec, lambda dtype: ops.const(True if dtype == "bool" else next(values), (2, 3), dtype))
    (folded,) = constant_folding(Graph((node,))).outputs
    assert folded.op == "const"
    want = eval_node(node, [np.full(i.shape, i.attrs[0], dtype=i.dtype) for i in node.inputs])
    np.testing.assert_array_equal(np.full(node.shape, folded.attrs[0], dtype=node.dtype), want)


def test_float_maximum_and_minimum_are_not_commutative():
    for op in ("maximum", "minimum"):
        assert not TABLE[op].commutes("float32") and not TABLE[op].commutes("float64")
        assert TABLE[op].commutes("int64") and TABLE[op].commutes("bool")
        x = _leaf(np.zeros(2, np.float32))
        assert not is_commutative(ops.binary(op, x, x))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_signed_zero_of_maximum_and_minimum_agrees_on_every_backend(op: str):
    """maximum(0.0, -0.0) and maximum(-0.0, 0.0) in one program (so CSE sees both) give numpy's
    signed zeros on the interpreter and on numba_cpu."""
    a, b = np.array([0.0, -0.0], np.float32), np.array([-0.0, 0.0], np.float32)
    want = [getattr(np, op)(a, b), getattr(np, op)(b, a)]
    for backend in ("interpreter", "numba_cpu"):
        with using_backend(backend):
            x, y = fusegrad.tensor(a), fusegrad.tensor(b)
            first, second = getattr(fusegrad, op)(x, y), getattr(fusegrad, op)(y, x)
            fusegrad.realize(first, second)
            for got, expected in zip((first.numpy(), second.numpy()), want):
                np.testing.assert_array_equal(np.signbit(got), np.signbit(expected), backend)
