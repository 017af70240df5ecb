"""The shared bottom-up rewriter."""
from __future__ import annotations

import pytest

from fusegrad.ir import ops
from fusegrad.ir.graph import Graph
from fusegrad.ir.node import Node
from fusegrad.ir.passes.rewrite import rebuild, rewrite


def _keep(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    return None


def _cancel_negs(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    if node.op == "neg" and inputs[0].op == "neg":
        return inputs[0].inputs[0]
    return None


def test_rule_that_never_fires_keeps_the_same_nodes(f32):
    x, y = f32(2, 3), f32(2, 3)
    out = ops.unary("exp", ops.binary("add", x, y))
    graph = Graph((out,))
    assert rewrite(graph, _keep).outputs[0] is out


def test_rebuild_returns_the_node_when_inputs_are_unchanged(f32):
    x = f32(3)
    node = ops.unary("exp", x)
    assert rebuild(node, (x,)) is node


def test_rebuild_keeps_op_attrs_and_location(f32):
    x, y = f32(2, 3), f32(2, 3)
    node = ops.permute(x, (1, 0), loc="model.py:3")
    new = rebuild(node, (y,))
    assert (new.op, new.inputs, new.shape, new.attrs) == ("permute", (y,), (3, 2), ((1, 0),))
    assert new.loc == "model.py:3"


def test_rule_sees_rewritten_inputs(f32):
    x = f32(4)
    exp = ops.unary("exp", x)
    seen = []

    def swap_exp_for_sin(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op == "neg":
            seen.append(inputs[0].op)
        return ops.unary("sin", inputs[0]) if node.op == "exp" else None

    out = rewrite(Graph((ops.unary("neg", exp),)), swap_exp_for_sin).outputs[0]
    assert seen == ["sin"]
    assert out.inputs[0].op == "sin"


def test_rule_is_reapplied_until_it_returns_none(f32):
    x = f32(4)
    node = x
    for _ in range(6):
        node = ops.unary("neg", node)
    assert rewrite(Graph((node,)), _cancel_negs).outputs[0] is x


def test_output_order_duplicates_and_names_are_kept(f32):
    x, y = f32(2), f32(2)
    a = ops.unary("neg", ops.unary("neg", x))
    b = ops.unary("exp", y)
    graph = Graph((b, a, b), names={a: "loss", b: "pred"})
    out = rewrite(graph, _cancel_negs)
    assert out.outputs == (b, x, b)
    assert out.names == {x: "loss", b: "pred"}


def test_deep_chain_does_not_recurse(f32):
    node = f32(2)
    for _ in range(5000):
        node = ops.unary("exp", node)
    out = rewrite(Graph((node,)), _keep)
    assert len(out) == 5001


def test_rule_changing_the_type_is_rejected(f32):
    x = f32(2, 3)

    def bad(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        return ops.permute(inputs[0], (1, 0)) if node.op == "exp" else None

    with pytest.raises(ValueError, match="another type"):
        rewrite(Graph((ops.unary("exp", x),)), bad)


def test_rule_that_never_settles_is_reported(f32):
    x = f32(2)

    def flip(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op in ("exp", "sin"):
            return ops.unary("sin" if node.op == "exp" else "exp", inputs[0])
        return None

    with pytest.raises(RuntimeError, match="did not settle"):
        rewrite(Graph((ops.unary("exp", x),)), flip)



def test_nodes_are_visited_in_the_order_given(f32):
    x, y = f32(2, 3), f32(2, 3)
    left, right = ops.unary("exp", x), ops.unary("sin", y)
    graph = Graph((ops.binary("add", left, right),))
    seen: list[Node] = []

    def record(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        seen.append(node)
        return None

    for order in ([x, left, y, right, graph.outputs[0]], [y, right, x, left, graph.outputs[0]]):
        seen.clear()
        assert rewrite(graph, record, order).outputs == graph.outputs
        assert seen == order
