"""Constant folding."""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad.ir import ops
from fusegrad.ir.graph import Graph
from fusegrad.ir.passes import constant_folding


def c(value, shape=(2, 3), dtype="float32"):
    return ops.const(value, shape, dtype)


def _folded(node):
    graph = Graph((node,))
    return constant_folding(graph).outputs[0]


def test_float32_arithmetic_rounds_like_numpy():
    out = _folded(ops.binary("mul", c(0.1), c(0.2)))
    assert out.op == "const"
    assert out.attrs[0] == float(np.float32(0.1) * np.float32(0.2))


def test_chain_of_elementwise_consts_folds_to_one_const(same_values):
    graph = Graph((ops.unary("exp", ops.binary("add", c(1.0), ops.unary("neg", c(3.0)))),))
    folded = constant_folding(graph)
    assert len(folded) == 1
    same_values(graph, folded)


def test_comparison_folds_to_a_bool_const():
    out = _folded(ops.binary("lt", c(1.0), c(2.0)))
    assert (out.op, out.dtype, out.attrs[0]) == ("const", "bool", True)


def test_cast_folds_in_the_target_dtype():
    out = _folded(ops.cast(c(2.7), "int32"))
    assert (out.op, out.dtype, out.attrs[0]) == ("const", "int32", 2)


def test_integer_arithmetic_wraps_like_numpy():
    out = _folded(ops.binary("mul", c(2**30, dtype="int32"), c(4, dtype="int32")))
    assert out.attrs[0] == 0


@pytest.mark.parametrize("make", [
    lambda x: ops.reshape(x, (3, 2)),
    lambda x: ops.permute(x, (1, 0)),
    lambda x: ops.slice_(x, ((0, 2, 1), (1, 3, 1))),
    lambda x: ops.expand(ops.reshape(x, (6, 1)), (6, 4)),
], ids=["reshape", "permute", "slice", "expand"])
def test_movement_of_a_const_is_a_const_of_the_new_shape(make, same_values):
    node = make(c(1.5))
    graph = Graph((node,))
    out = constant_folding(graph).outputs[0]
    assert (out.op, out.shape, out.attrs[0]) == ("const", node.shape, 1.5)
    same_values(graph, Graph((out,)))


def test_pad_of_const_zero_is_const_zero():
    out = _folded(ops.pad(c(0.0), (4, 5), ((1, 1), (0, 2))))
    assert (out.op, out.shape, out.attrs[0]) == ("const", (4, 5), 0.0)


def test_pad_of_nonzero_const_is_kept():
    assert _folded(ops.pad(c(1.0), (4, 5), ((1, 1), (0, 2)))).op == "pad"


def test_sum_of_const_is_value_times_count(same_values):
    graph = Graph((ops.reduce("sum", c(1.5, (4, 5, 6)), (0, 2)),))
    out = constant_folding(graph).outputs[0]
    assert (out.op, out.shape, out.attrs[0]) == ("const", (1, 5, 1), 36.0)
    same_values(graph, Graph((out,)))


def test_sum_over_an_empty_axis_is_zero_even_of_inf():
    out = _folded(ops.reduce("sum", c(float("inf"), (0, 3)), (0,)))
    assert out.attrs[0] == 0.0


def test_max_and_argmax_of_const():
    x = c(-2.0, (3, 4))
    assert _folded(ops.reduce("max", x, (1,))).attrs[0] == -2.0
    out = _folded(ops.argmax(x, 0))
    assert (out.op, out.dtype, out.attrs[0]) == ("const", "int64", 0)


@pytest.mark.parametrize("cond", [True, False])
def test_where_with_const_condition_picks_a_branch(cond, f32):
    x, y = f32(2, 3), f32(2, 3)
    out = _folded(ops.where(c(cond, dtype="bool"), x, y))
    assert out is (x if cond else y)


def test_rand_is_never_folded():
    r = ops.rand(c(3, (2,), "int64"), (2, 3), "float32")
    out = _folded(ops.binary("add", r, c(0.5)))
    assert out.op == "add" and out.inputs[0] is r


def test_integer_to_negative_power_is_left_for_run_time():
    assert _folded(ops.binary("pow", c(2, dtype="int64"), c(-1, dtype="int64"))).op == "pow"


def test_integer_div_is_not_folded():
    assert _folded(ops.binary("div", c(6, dtype="int32"), c(3, dtype="int32"))).op == "div"


def test_nan_result_is_folded(same_values):
    graph = Graph((ops.unary("log", c(-1.0)),))
    folded = constant_folding(graph)
    assert np.isnan(folded.outputs[0].attrs[0])
    same_values(graph, folded)


def test_non_const_operands_are_kept(f32):
    x = f32(2, 3)
    node = ops.binary("mul", x, c(2.0))
    assert _folded(node) is node


def test_negative_zero_is_not_folded(same_values):
    graph = Graph((ops.binary("div", c(1.0), ops.unary("neg", c(0.0))),))
    folded = constant_folding(graph)
    assert folded.outputs[0].inputs[1].op == "neg"
    same_values(graph, folded)
