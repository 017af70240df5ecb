"""Algebraic simplification."""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad.ir import ops
from fusegrad.ir.graph import Graph
from fusegrad.ir.node import Node
from fusegrad.ir.passes import algebraic_simplification


def c(value, shape=(2, 3), dtype="float32"):
    return ops.const(value, shape, dtype)


def _simplified(node: Node) -> Node:
    return algebraic_simplification(Graph((node,))).outputs[0]


@pytest.mark.parametrize("make", [
    lambda x: ops.binary("mul", x, c(1.0)),
    lambda x: ops.binary("mul", c(1.0), x),
    lambda x: ops.binary("add", x, c(0.0)),
    lambda x: ops.binary("add", c(0.0), x),
    lambda x: ops.binary("sub", x, c(0.0)),
    lambda x: ops.binary("div", x, c(1.0)),
    lambda x: ops.binary("pow", x, c(1.0)),
    lambda x: ops.unary("neg", ops.unary("neg", x)),
    lambda x: ops.where(ops.binary("lt", x, c(0.0)), x, x),
    lambda x: ops.permute(ops.permute(x, (1, 0)), (1, 0)),
    lambda x: ops.reshape(ops.reshape(x, (6,)), (2, 3)),
    lambda x: ops.reduce("sum", x, ()),
], ids=["x*1", "1*x", "x+0", "0+x", "x-0", "x/1", "x**1", "--x", "where(c,x,x)", "permute-back",
        "reshape-back", "sum-no-axes"])
def test_identity_is_removed(make, f32, same_values):
    x = f32(2, 3)
    graph = Graph((make(x),))
    out = algebraic_simplification(graph)
    assert out.outputs[0] is x
    same_values(graph, out)


def test_x_times_zero_is_kept(f32):
    x = f32(2, 3)
    node = ops.binary("mul", x, c(0.0))
    assert _simplified(node) is node


def test_x_times_zero_keeps_nan_and_inf(leaf, same_values):
    x = leaf(np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32))
    graph = Graph((ops.binary("mul", x, ops.const(0.0, (4,), "float32")),))
    same_values(graph, algebraic_simplification(graph))


def test_square_becomes_a_product(f32, same_values):
    x = f32(2, 3)
    graph = Graph((ops.binary("pow", x, c(2.0)),))
    out = algebraic_simplification(graph)
    assert out.outputs[0] is ops.binary("mul", x, x)
    same_values(graph, out)


def test_reshape_of_reshape_is_one_reshape(f32):
    x = f32(2, 3, 4)
    out = _simplified(ops.reshape(ops.reshape(x, (6, 4)), (24,)))
    assert out.op == "reshape" and out.inputs == (x,) and out.shape == (24,)


def test_permute_of_permute_is_one_composed_permute(f32, same_values):
    x = f32(2, 3, 4)
    graph = Graph((ops.permute(ops.permute(x, (1, 2, 0)), (1, 2, 0)),))
    out = algebraic_simplification(graph)
    assert out.outputs[0].op == "permute" and out.outputs[0].inputs == (x,)
    same_values(graph, out)


def test_expand_of_expand_is_one_expand(f32, same_values):
    x = f32(1, 1, 3)
    graph = Graph((ops.expand(ops.expand(x, (1, 4, 3)), (5, 4, 3)),))
    out = algebraic_simplification(graph)
    assert out.outputs[0] is ops.expand(x, (5, 4, 3))
    same_values(graph, out)


@pytest.mark.parametrize("op,attrs", [
    ("reshape", ()), ("permute", ((0, 1),)), ("expand", ()), ("slice", (((0, 2, 1), (0, 3, 1)),)),
    ("pad", (((0, 1), (0, 1)),)),
])
def test_movement_that_changes_nothing_is_removed(op, attrs, f32):
    x = f32(2, 3)
    assert _simplified(Node(op, (x,), x.shape, x.dtype, attrs)) is x


def test_permute_that_keeps_the_shape_is_kept(f32):
    x = f32(3, 3)
    node = ops.permute(x, (1, 0))
    assert _simplified(node) is node


def test_cast_to_the_same_dtype_is_removed(f32):
    x = f32(2, 3)
    assert _simplified(Node("cast", (x,), x.shape, x.dtype)) is x


@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduction_over_size_one_axes_is_removed(op, f32, same_values):
    x = f32(1, 3, 1)
    graph = Graph((ops.reduce(op, x, (0, 2)),))
    out = algebraic_simplification(graph)
    assert out.outputs[0] is x
    same_values(graph, out)


def test_reduction_over_a_longer_axis_is_kept(f32):
    node = ops.reduce("sum", f32(1, 3), (0, 1))
    assert _simplified(node) is node


def test_argmax_over_a_size_one_axis_is_zero(f32, same_values):
    graph = Graph((ops.argmax(f32(3, 1), 1),))
    out = algebraic_simplification(graph)
    assert out.outputs[0] is ops.const(0, (3, 1), "int64")
    same_values(graph, out)


def test_expand_of_const_is_a_const():
    out = _simplified(ops.expand(ops.const(2.0, (1, 3), "float32"), (4, 3)))
    assert out is ops.const(2.0, (4, 3), "float32")


def test_sub_of_zero_from_the_left_is_kept(f32):
    x = f32(2, 3)
    node = ops.binary("sub", c(0.0), x)
    assert _simplified(node) is node
