"""Dead-code elimination."""
from __future__ import annotations

import numpy as np

from fusegrad.ir import ops
from fusegrad.ir.graph import Graph
from fusegrad.ir.passes import dead_code_elimination


def test_detach_is_removed(f32, same_values):
    x = f32(2, 3)
    out = ops.unary("exp", ops.unary("detach", ops.unary("neg", x)))
    graph = Graph((out,))
    clean = dead_code_elimination(graph)
    assert [n.op for n in clean.nodes] == ["buffer", "neg", "exp"]
    same_values(graph, clean)


def test_detached_output_becomes_its_input(f32):
    x = f32(3)
    assert dead_code_elimination(Graph((ops.unary("detach", x),))).outputs == (x,)


def test_node_count_never_grows(f32):
    x, y = f32(4), f32(4)
    s = ops.binary("add", x, y)
    graph = Graph((ops.unary("exp", s), ops.binary("mul", s, ops.unary("detach", s))))
    assert len(dead_code_elimination(graph)) < len(graph)


def test_only_nodes_the_outputs_need_are_kept(f32):
    x, y = f32(4), f32(4)
    used = ops.unary("exp", x)
    ops.unary("sin", y)  # built but not an output
    assert {n.op for n in dead_code_elimination(Graph((used,))).nodes} == {"buffer", "exp"}


def test_rand_is_kept(leaf):
    key = leaf(np.array([7, 0], dtype=np.int64))
    r = ops.rand(key, (3,), "float32")
    out = dead_code_elimination(Graph((ops.unary("detach", r),))).outputs[0]
    assert out is r
