"""Fusion: kernel counts for the patterns the design promises, a structural check of the
Schedule contract on every test, and a numpy schedule executor compared with the interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusegrad.backends.interpreter import eval_node, evaluate
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.fusion_decisions import DecisionKind, FusionDecision, RefusalRule
from fusegrad.ir.graph import Graph
from fusegrad.ir.node import Node
from fusegrad.ir.passes import fuse_group
from fusegrad.ir.passes.fuse import fuse
from fusegrad.ir.schedule import Extern, Kernel, Schedule, format_schedule
from fusegrad.ir.view import View

BODY_OPS = ops.ELEMENTWISE | ops.REDUCE | ops.GATHER
NAME = re.compile(r"^k\d+_[a-z]+(_[a-z]+){0,2}_(\d+(x\d+)*|scalar)$")


# ----------------------------------------------------------------------------- helpers
def buf(shape: tuple[int, ...], dtype: str = "float32", seed: int = 0, low: float = -1.0,
        high: float = 1.0) -> Node:
    rng = np.random.default_rng(seed + 7 * len(shape) + sum(shape))
    if dtype in ("int32", "int64"):
        data = rng.integers(int(low), int(high), size=shape)
    else:
        data = rng.uniform(low, high, size=shape)
    return ops.buffer(Buffer(shape, dtype, np.asarray(data, dtype=dtype).reshape(-1)))


def expand_to(node: Node, shape: tuple[int, ...]) -> Node:
    return ops.expand(node, shape)


def read_view(flat: np.ndarray, view: View) -> np.ndarray:
    """The array a view reads from a flat buffer (masked positions read zero).

    Index arithmetic rather than ``as_strided``: a masked dim contributes ``k * stride`` for the
    ``k``-th valid position, which no strided array can express.
    """
    offsets = np.full(view.shape, view.offset, dtype=np.int64)
    valid = np.ones(view.shape, dtype=bool)
    for d, i in enumerate(np.indices(view.shape, dtype=np.int64)):
        mask = view.mask(d)
        if mask is None:
            offsets += i * view.strides[d]
            continue
        start, step, count = mask
        k = (i - start) // step
        ok = (i >= start) & ((i - start) % step == 0) & (k < count)
        valid &= ok
        offsets += np.where(ok, k, 0) * view.strides[d]
    assert np.all((offsets[valid] >= 0) & (offsets[valid] < flat.size)), f"{view} reads out of bounds"
    out = np.zeros(view.shape, dtype=flat.dtype)
    out[valid] = flat[offsets[valid]]
    return out


def check_structure(schedule: Schedule, graph: Graph) -> None:
    """Assert the Schedule contract of ``fusegrad.ir.schedule``."""
    names = [it.name for it in schedule.items]
    assert len(set(names)) == len(names), names
    assert all(NAME.match(n) for n in names), names
    written: set[Node] = set()
    inputs = set(schedule.inputs)
    assert all(n.op == "buffer" for n in schedule.inputs)

    def readable(src: Node) -> bool:
        return src in written or src in inputs

    for item in schedule.items:
        if isinstance(item, Extern):
            assert item.node.op in ops.EXTERN
            assert len(item.loads) == len(item.node.inputs)
            for ld, operand in zip(item.loads, item.node.inputs):
                assert ld.view.shape == operand.shape and ld.view.masks is None
                assert ld.src.dtype == operand.dtype and readable(ld.src), ld.src
            assert item.node not in written
            written.add(item.node)
            continue
        assert isinstance(item, Kernel)
        assert tuple(sorted(item.reduce_axes)) == item.reduce_axes
        assert all(item.shape[a] != 1 for a in item.reduce_axes), "size-1 reductions are identities"
        for ref, ld in item.loads.items():
            assert ld.view.shape == ref.shape and ld.src.dtype == ref.dtype
            assert readable(ld.src), f"{item.name} reads {ld.src} before it is written"
            if ref.op not in ops.MOVEMENT:
                assert ld.src is ref and ld.view.is_contiguous
        body: set[Node] = set()
        for node in item.body:
            assert node.op in BODY_OPS, node
            assert node not in written, f"{node} is computed in {item.name} and materialised before"
            level = node.shape if node.shape == item.shape else None
            if item.reduce_axes and node.shape == item.kept_shape:
                level = item.kept_shape
            assert level is not None, f"{node} does not fit {item.name}"
            if node.op in ops.REDUCE:
                assert node.inputs[0].shape == item.shape
                axes = node.attrs[0] if node.op != "argmax" else (node.attrs[0],)
                assert axes == item.reduce_axes
            for k, ref in enumerate(node.inputs):
                if node.op == "gather" and k == 0:
                    assert ref in item.loads, "a gather source is a load"
                elif ref in body or ref in item.loads or ref.op == "const":
                    pass
                elif ref.op == "rand":
                    assert ref.inputs[0] in item.loads, "a random key is a load"
                    assert ref.shape == (node.inputs[0].shape if node.op in ops.REDUCE else node.shape)
                elif ref.op == "expand":
                    r = ref.inputs[0]
                    assert r in body and r.op in ops.REDUCE and ref.shape == item.shape, ref
                else:
                    raise AssertionError(f"{item.name}: {node} reads {ref}, which is not available")
            body.add(node)
        for out in item.outputs:
            assert out in body or out in item.loads or out.op in ("const", "rand"), out
            assert out not in written, f"{out} is written twice"
            written.add(out)
    for item in schedule.items:  # one placement decision per computed node, merged ones too
        placed = [d.nodes[0] for d in item.decisions if d.kind in PLACED]
        computed = [item.node] if isinstance(item, Extern) else list(item.body)
        assert len(placed) == len(computed) and set(placed) == set(computed), item.name
    assert all(d.kind in (DecisionKind.NORMALISED, DecisionKind.OUTPUT_VIEW)
               for d in schedule.decisions)
    assert len(schedule.outputs) == len(graph.outputs)
    for held, out in zip(schedule.outputs, graph.outputs):
        assert held in written or held in inputs, held
        assert held.size == out.size and held.dtype == out.dtype


def run_kernel(kernel: Kernel, memory: dict[Node, np.ndarray]) -> None:
    """Evaluate a kernel's body on whole arrays and write its outputs to ``memory``."""
    values: dict[Node, np.ndarray] = {}

    def operand(ref: Node) -> np.ndarray:
        if ref in values:
            return values[ref]
        if ref in kernel.loads:
            ld = kernel.loads[ref]
            return read_view(memory[ld.src], ld.view)
        if ref.op == "rand":
            return eval_node(ref, [operand(ref.inputs[0])])
        if ref.op == "expand":
            return np.broadcast_to(values[ref.inputs[0]], ref.shape)
        return eval_node(ref, [])

    for node in kernel.body:
        values[node] = eval_node(node, [operand(i) for i in node.inputs])
    for out in kernel.outputs:
        value = np.asarray(operand(out))
        assert value.shape == out.shape and value.dtype == np.dtype(out.dtype)
        memory[out] = np.ascontiguousarray(value).reshape(-1).copy()


def run_schedule(schedule: Schedule) -> list[np.ndarray]:
    """Run a schedule item by item on numpy; values of graph outputs as flat arrays."""
    memory: dict[Node, np.ndarray] = {n: n.attrs[0].data for n in schedule.inputs}
    for item in schedule.items:
        if isinstance(item, Extern):
            args = [read_view(memory[ld.src], ld.view) for ld in item.loads]
            memory[item.node] = np.ascontiguousarray(eval_node(item.node, args)).reshape(-1)
        else:
            run_kernel(item, memory)
    return [memory[n] for n in schedule.outputs]


def fuse_and_check(*outputs: Node) -> Schedule:
    """Fuse a graph, check the contract and compare the executed schedule with the interpreter."""
    graph = Graph(tuple(outputs))
    schedule = fuse(graph)
    check_structure(schedule, graph)
    got = run_schedule(schedule)
    for value, want in zip(got, evaluate(graph.outputs)):
        np.testing.assert_allclose(value, want.reshape(-1), rtol=2e-5, atol=1e-6, equal_nan=True)
    assert format_schedule(schedule)
    return schedule


def softmax_parts(x: Node) -> tuple[Node, Node]:
    m = expand_to(ops.unary("detach", ops.reduce("max", x, (1,))), x.shape)
    shifted = ops.binary("sub", x, m)
    e = ops.unary("exp", shifted)
    return shifted, e


def kernel_of(schedule: Schedule, node: Node) -> Kernel:
    return next(k for k in schedule.kernels if node in k.body)


def of_kind(holder: Schedule | Kernel | Extern, kind: DecisionKind) -> list[FusionDecision]:
    return [d for d in holder.decisions if d.kind is kind]


PLACED = {DecisionKind.STARTED, DecisionKind.FUSED, DecisionKind.FUSED_KEPT, DecisionKind.EPILOGUE,
          DecisionKind.REDUCTION, DecisionKind.EXTERN}


def placement(schedule: Schedule, node: Node) -> FusionDecision:
    """The decision that put ``node`` into its kernel."""
    (decision,) = [d for it in schedule.items for d in it.decisions
                   if d.kind in PLACED and d.nodes[0] is node]
    return decision


# ----------------------------------------------------------------------------- goal examples
def test_row_softmax_is_at_most_two_kernels():
    x = buf((32, 10))
    _, e = softmax_parts(x)
    out = ops.binary("div", e, expand_to(ops.reduce("sum", e, (1,)), x.shape))
    schedule = fuse_and_check(out)
    assert len(schedule.kernels) <= 2 and not schedule.externs


def test_row_softmax_epilogue_reads_the_accumulator_in_one_kernel():
    x = buf((32, 10))
    _, e = softmax_parts(x)
    out = ops.binary("div", e, expand_to(ops.reduce("sum", e, (1,)), x.shape))
    schedule = fuse_and_check(out)
    (kernel,) = schedule.kernels
    assert kernel.reduce_axes == (1,) and kernel.outputs == tuple(schedule.outputs)
    (written,) = kernel.outputs  # out rebuilt over the normalised softmax
    assert any(d.nodes[0] is written and [n.op for n in d.nodes[1:]] == ["sum"]
               for d in of_kind(kernel, DecisionKind.EPILOGUE))


def test_log_softmax_is_at_most_two_kernels():
    x = buf((32, 10))
    shifted, e = softmax_parts(x)
    lse = ops.unary("log", ops.reduce("sum", e, (1,)))
    out = ops.binary("sub", shifted, expand_to(lse, x.shape))
    schedule = fuse_and_check(out)
    assert len(schedule.kernels) <= 2 and not schedule.externs


@pytest.mark.parametrize("form", ["where", "maximum"])
def test_relu_of_matmul_plus_bias_is_one_extern_and_one_kernel(form):
    x, w, b = buf((8, 6)), buf((6, 5), seed=1), buf((5,), seed=2)
    y = ops.binary("add", ops.matmul(x, w), expand_to(ops.reshape(b, (1, 5)), (8, 5)))
    zero = ops.const(0.0, y.shape, y.dtype)
    out = ops.where(ops.binary("lt", zero, y), y, zero) if form == "where" else \
        ops.binary("maximum", y, zero)
    schedule = fuse_and_check(out)
    assert len(schedule.externs) == 1 and len(schedule.kernels) == 1
    assert [type(it) for it in schedule.items] == [Extern, Kernel]


def test_sgd_momentum_nesterov_weight_decay_is_one_kernel_with_two_outputs():
    shape = (16, 8)
    p, g, momentum_buf = buf(shape), buf(shape, seed=1), buf(shape, seed=2)
    lr = expand_to(ops.reshape(buf((), seed=3), (1, 1)), shape)
    wd, m = ops.const(1e-4, shape, "float32"), ops.const(0.9, shape, "float32")
    g2 = ops.binary("add", g, ops.binary("mul", wd, p))
    buf2 = ops.binary("add", ops.binary("mul", m, momentum_buf), g2)
    step = ops.binary("add", g2, ops.binary("mul", m, buf2))
    p2 = ops.binary("sub", p, ops.binary("mul", lr, step))
    schedule = fuse_and_check(p2, buf2)
    (kernel,) = schedule.items
    assert isinstance(kernel, Kernel) and set(kernel.outputs) == {p2, buf2}
    assert schedule.outputs == [p2, buf2]


def test_mean_of_elementwise_expression_is_one_kernel():
    a, b = buf((12, 7)), buf((12, 7), seed=1)
    d = ops.binary("sub", a, b)
    s = ops.reduce("sum", ops.binary("mul", d, d), (0, 1))
    mean = ops.binary("div", s, ops.const(84.0, s.shape, s.dtype))
    schedule = fuse_and_check(mean)
    assert len(schedule.items) == 1 and schedule.kernels[0].reduce_axes == (0, 1)


def test_scalar_mean_output_is_its_kept_value_without_a_copy():
    a = buf((12, 7))
    s = ops.reduce("sum", ops.unary("abs", a), (0, 1))
    mean = ops.reshape(ops.binary("div", s, ops.const(84.0, s.shape, s.dtype)), ())
    schedule = fuse_and_check(mean)
    assert len(schedule.items) == 1 and schedule.outputs == [mean.inputs[0]]


def test_reduction_over_axis0_then_a_different_reduction_is_two_kernels():
    x = buf((64, 10))
    col = ops.reduce("sum", x, (0,))
    centred = ops.binary("sub", x, expand_to(col, x.shape))
    out = ops.reduce("max", centred, (1,))
    schedule = fuse_and_check(out)
    assert len(schedule.kernels) == 2
    assert [k.reduce_axes for k in schedule.kernels] == [(0,), (1,)]


def test_reduction_of_a_reduction_is_two_kernels():
    x = buf((64, 10))
    out = ops.reduce("sum", ops.reduce("sum", x, (0,)), (1,))
    assert len(fuse_and_check(out).kernels) == 2


# ----------------------------------------------------------------------------- elementwise
def test_elementwise_chain_is_one_kernel():
    x = buf((4, 5))
    out = ops.unary("tanh", ops.unary("exp", ops.unary("neg", ops.unary("abs", x))))
    (kernel,) = fuse_and_check(out).kernels
    assert kernel.reduce_axes == () and len(kernel.body) == 4 and kernel.outputs == (out,)


def test_node_used_twice_in_a_kernel_is_computed_once_and_not_written():
    x = buf((4, 5))
    e = ops.unary("exp", x)
    out = ops.binary("mul", e, ops.unary("sin", e))
    (kernel,) = fuse_and_check(out).kernels
    assert kernel.body.count(e) == 1 and e not in kernel.outputs


def test_intermediate_graph_output_is_written_by_the_same_kernel():
    x = buf((4, 5))
    e = ops.unary("exp", x)
    out = ops.unary("neg", e)
    (kernel,) = fuse_and_check(e, out).kernels
    assert kernel.outputs == (e, out)


def test_elementwise_groups_that_meet_merge():
    a, b = buf((6, 3)), buf((6, 3), seed=1)
    left = ops.unary("exp", ops.unary("neg", a))
    right = ops.unary("sin", ops.binary("mul", b, b))
    schedule = fuse_and_check(ops.binary("add", left, right))
    assert len(schedule.kernels) == 1
    (kernel,) = schedule.kernels
    (merge,) = of_kind(kernel, DecisionKind.MERGED)
    assert merge.nodes[0].op == "add" and merge.nodes[1] in kernel.body
    assert any(d.via for d in kernel.decisions), "the merged kernel keeps its decisions"


def test_node_read_through_a_view_is_materialised_by_its_kernel():
    x = buf((5, 5))
    e = ops.unary("exp", x)
    out = ops.binary("add", e, ops.permute(e, (1, 0)))
    schedule = fuse_and_check(out)
    first, second = schedule.kernels
    assert first.outputs == (e,) and second.outputs == (out,)
    assert second.loads[ops.permute(e, (1, 0))].view.strides == (1, 5)
    (materialised,) = of_kind(first, DecisionKind.MATERIALISED)
    assert materialised.nodes == (e,) and set(materialised.readers) == {second.name}


def test_groups_are_not_merged_when_that_would_create_a_cycle():
    x = buf((5, 5))
    a = ops.unary("exp", x)
    b = ops.unary("neg", ops.permute(a, (1, 0)))  # its kernel must run after a's
    out = ops.binary("add", a, b)
    schedule = fuse_and_check(out)
    assert len(schedule.kernels) == 2
    assert kernel_of(schedule, out) is kernel_of(schedule, b)


def test_detach_is_an_elementwise_identity():
    x = buf((4, 5))
    out = ops.unary("exp", ops.unary("detach", ops.unary("neg", x)))
    (kernel,) = fuse_and_check(out).kernels
    assert [n.op for n in kernel.body] == ["neg", "detach", "exp"]


def test_constants_through_movement_ops_are_inlined_at_the_new_shape():
    x = buf((4, 5))
    c = expand_to(ops.reshape(ops.const(2.0, (), "float32"), (1, 1)), (4, 5))
    (kernel,) = fuse_and_check(ops.binary("mul", x, c)).kernels
    (node,) = kernel.body
    assert node.inputs[1].op == "const" and node.inputs[1].shape == (4, 5)
    assert list(kernel.loads) == [x]


def test_padded_nonzero_constant_is_filled_once_and_read_through_the_pad():
    x = buf((4, 5))
    c = ops.pad(ops.const(3.0, (2, 5), "float32"), (4, 5), ((1, 1), (0, 1)))
    schedule = fuse_and_check(ops.binary("add", x, c))
    fill, kernel = schedule.items
    assert fill.name.startswith("k0_fill") and kernel.loads[c].view.masks is not None


# ----------------------------------------------------------------------------- reductions
def test_reduction_over_size1_axes_is_elementwise():
    x = buf((6, 1))
    out = ops.unary("exp", ops.reduce("sum", ops.unary("neg", x), (1,)))
    (kernel,) = fuse_and_check(out).kernels
    assert kernel.reduce_axes == () and [n.op for n in kernel.body] == ["neg", "exp"]


def test_size1_axes_are_dropped_from_a_reduction():
    x = buf((1, 6))
    (kernel,) = fuse_and_check(ops.reduce("sum", x, (0, 1))).kernels
    assert kernel.reduce_axes == (1,)


def test_argmax_is_a_reduction_and_joins_max_over_the_same_axis():
    x = buf((8, 5))
    y = ops.unary("exp", x)
    best = ops.argmax(y, 1)
    top = ops.reduce("max", y, (1,))
    schedule = fuse_and_check(best, top)
    (kernel,) = schedule.kernels
    assert kernel.reduce_axes == (1,) and set(kernel.outputs) == {best, top}


def test_sibling_reductions_of_one_input_share_a_kernel_when_they_meet():
    x = buf((6, 9))
    s1 = ops.reduce("sum", x, (1,))
    s2 = ops.reduce("sum", ops.binary("mul", x, x), (1,))
    n = ops.const(9.0, s1.shape, "float32")
    mean = ops.binary("div", s1, n)
    var = ops.binary("sub", ops.binary("div", s2, n), ops.binary("mul", mean, mean))
    (kernel,) = fuse_and_check(var).kernels
    assert kernel.outputs == (var,)


def test_centred_variance_is_one_kernel():
    x = buf((6, 9))
    mean = ops.binary("div", ops.reduce("sum", x, (1,)), ops.const(9.0, (6, 1), "float32"))
    d = ops.binary("sub", x, expand_to(mean, x.shape))
    var = ops.reduce("sum", ops.binary("mul", d, d), (1,))
    assert len(fuse_and_check(var).kernels) == 1


def test_reductions_over_different_axes_do_not_share_a_kernel():
    x = buf((6, 9))
    e = ops.unary("exp", x)
    schedule = fuse_and_check(ops.reduce("sum", e, (0,)), ops.reduce("sum", e, (1,)))
    assert len(schedule.kernels) == 2
    assert sum(e in k.outputs for k in schedule.kernels) == 1


# ----------------------------------------------------------------------------- views and leaves
def test_view_chain_that_cannot_compose_gets_a_copy_kernel():
    x = buf((3, 4))
    padded = ops.pad(x, (5, 4), ((1, 1), (0, 1)))
    out = ops.unary("exp", ops.reshape(padded, (20,)))
    schedule = fuse_and_check(out)
    copy, kernel = schedule.items
    assert copy.name.startswith("k0_copy") and copy.outputs == (padded,)
    assert kernel.loads[out.inputs[0]].src is padded


def test_graph_output_that_is_an_input_needs_no_item():
    x, y = buf((3, 4)), buf((3, 4), seed=1)
    schedule = fuse_and_check(x, ops.unary("neg", y))
    assert schedule.outputs[0] is x and len(schedule.items) == 1
    assert schedule.inputs == [x, y]


def test_graph_output_that_is_a_transposed_input_is_copied():
    x = buf((3, 4))
    out = ops.permute(x, (1, 0))
    (copy,) = fuse_and_check(out).items
    assert copy.outputs == (out,) and copy.body == ()


def test_schedule_inputs_are_the_buffers_actually_read_in_graph_order():
    a, b, c = buf((2, 3)), buf((2, 3), seed=1), buf((2, 1), seed=2)
    unused = ops.argmax(c, 1)  # an argmax over a size-1 axis is zeros: c is never read
    out = ops.binary("add", ops.binary("mul", b, a), ops.cast(expand_to(unused, (2, 3)), "float32"))
    assert fuse_and_check(out).inputs == [b, a]


def test_rand_is_computed_inline_from_a_loaded_key():
    key = buf((2,), "int64", low=0, high=100)
    x = buf((4, 5))
    out = ops.binary("mul", x, ops.rand(key, (4, 5), "float32"))
    (kernel,) = fuse_and_check(out).kernels
    assert key in kernel.loads and [n.op for n in kernel.body] == ["mul"]


def test_rand_read_through_a_view_is_materialised_first():
    key = buf((2,), "int64", low=0, high=100)
    noise = ops.rand(key, (4, 1), "float32")
    out = ops.binary("mul", buf((4, 5)), expand_to(noise, (4, 5)))
    schedule = fuse_and_check(out)
    assert schedule.items[0].name.startswith("k0_rand") and schedule.items[0].outputs == (noise,)


def test_gather_reads_its_source_from_memory_and_fuses_with_its_index():
    x = buf((6, 4))
    logp = ops.unary("exp", x)
    idx = ops.cast(buf((6, 1), "int32", seed=3, low=0, high=4), "int64")
    picked = ops.gather(logp, idx, 1)
    loss = ops.reduce("sum", ops.unary("neg", picked), (0,))
    schedule = fuse_and_check(loss)
    assert len(schedule.kernels) == 2
    second = kernel_of(schedule, picked)
    assert logp in second.loads and idx in second.body


def test_scatter_add_is_an_extern():
    idx = buf((4, 3), "int64", seed=1, low=0, high=5)
    src = ops.unary("exp", buf((4, 3)))
    out = ops.scatter_add(idx, src, 0, (5, 3))
    schedule = fuse_and_check(ops.unary("neg", out))
    assert [type(it) for it in schedule.items] == [Kernel, Extern, Kernel]


def test_matmul_reads_a_transposed_operand_without_a_copy():
    x, w = buf((8, 6)), buf((5, 6), seed=1)
    schedule = fuse_and_check(ops.matmul(x, ops.permute(w, (1, 0))))
    (extern,) = schedule.items
    assert extern.loads[1].view.strides == (1, 6)


def test_matmul_operand_with_a_column_slice_is_copied_first():
    x, w = buf((8, 10)), buf((6, 5), seed=1)
    sliced = ops.slice_(x, ((0, 8, 1), (2, 8, 1)))
    schedule = fuse_and_check(ops.matmul(sliced, w))
    copy, extern = schedule.items
    assert copy.outputs == (sliced,) and extern.loads[0].view.is_contiguous


def test_gather_source_computed_with_its_index_is_materialised_first():
    e = ops.unary("exp", buf((4, 5)))
    idx = ops.cast(ops.binary("lt", e, ops.const(1.5, e.shape, "float32")), "int64")
    picked = ops.gather(e, idx, 1)
    first, second = fuse_and_check(picked).kernels
    assert e in first.outputs and picked in second.body and e in second.loads


def test_computed_random_key_is_materialised_and_loaded():
    key = ops.binary("add", buf((2,), "int64", low=0, high=50), ops.const(3, (2,), "int64"))
    out = ops.binary("mul", buf((4, 5)), ops.rand(key, (4, 5), "float32"))
    first, second = fuse_and_check(out).kernels
    assert first.outputs == (key,) and key in second.loads


def test_repeated_outputs_are_written_once():
    x = buf((4, 5))
    e = ops.unary("exp", x)
    schedule = fuse_and_check(e, e, x)
    assert schedule.outputs == [e, e, x] and len(schedule.items) == 1


def test_zero_size_tensors_are_scheduled():
    z = buf((0, 3))
    schedule = fuse_and_check(ops.reduce("sum", ops.unary("exp", z), (0,)), ops.unary("neg", z))
    assert len(schedule.kernels) == 2


def test_empty_graph_is_an_empty_schedule():
    schedule = fuse(Graph(()))
    assert schedule.items == [] and schedule.inputs == [] and schedule.outputs == []


def test_constant_output_is_filled():
    c = ops.const(2.0, (2, 2), "float32")
    (fill,) = fuse_and_check(c).items
    assert fill.outputs == (c,) and fill.body == () and not fill.loads


def test_broadcast_reduction_output_is_copied_from_the_reduction():
    x = buf((4, 5))
    wide = ops.expand(ops.reduce("sum", x, (1,)), (4, 5))
    reduce_kernel, copy = fuse_and_check(wide, ops.binary("div", x, wide)).items
    assert wide.inputs[0] in reduce_kernel.outputs and copy.outputs == (wide,)
    assert copy.loads[wide].src is wide.inputs[0]


def test_kept_shape_group_merges_into_the_reduce_kernel():
    x = buf((4, 5))
    k = ops.unary("exp", buf((4, 1), seed=1))
    (kernel,) = fuse_and_check(ops.binary("add", ops.reduce("sum", x, (1,)), k)).kernels
    assert kernel.level(k) == "kept"


def test_matmul_operand_with_padding_is_copied_first():
    padded = ops.pad(buf((4, 5)), (4, 6), ((0, 1), (0, 1)))
    copy, extern = fuse_and_check(ops.matmul(padded, buf((6, 2), seed=1))).items
    assert copy.outputs == (padded,) and extern.loads[0].src is padded


def test_batched_matmul_reads_a_broadcast_operand_without_a_copy():
    w = ops.expand(buf((1, 5, 2), seed=1), (3, 5, 2))
    (extern,) = fuse_and_check(ops.matmul(buf((3, 4, 5)), w)).items
    assert extern.loads[1].view.strides[0] == 0


# ----------------------------------------------------------------------------- normalisation
def test_scalar_arithmetic_on_squeezed_reductions_joins_their_kernel():
    x = buf((8,))
    e = ops.unary("exp", x)
    total = ops.reshape(ops.reduce("sum", e, (0,)), ())
    biggest = ops.reshape(ops.reduce("max", e, (0,)), ())
    schedule = fuse_and_check(ops.binary("div", total, biggest))
    assert len(schedule.items) == 1


def test_broadcast_of_a_computed_scalar_is_recomputed_per_element():
    lr, p = buf((), seed=1), buf((16, 8))
    step = expand_to(ops.reshape(ops.unary("neg", lr), (1, 1)), p.shape)
    schedule = fuse_and_check(ops.binary("add", p, ops.binary("mul", step, p)))
    (kernel,) = schedule.items
    assert lr in [ld.src for ld in kernel.loads.values()]


def test_reduction_of_a_flattened_computed_value_joins_its_kernel():
    x = buf((6, 1, 4))
    flat = ops.reshape(ops.unary("exp", x), (6, 4))
    schedule = fuse_and_check(ops.reduce("sum", flat, (1,)))
    (kernel,) = schedule.items
    assert kernel.shape == (6, 1, 4) and kernel.reduce_axes == (2,)


def test_transposed_product_is_computed_directly():
    x, w = buf((8, 6)), buf((6, 5), seed=1)
    out = ops.permute(ops.matmul(x, w), (1, 0))
    schedule = fuse_and_check(out)
    (extern,) = schedule.items
    assert isinstance(extern, Extern) and extern.node.shape == (5, 8)


def test_transposed_product_used_elsewhere_is_not_recomputed():
    x, w = buf((8, 6)), buf((6, 5), seed=1)
    y = ops.matmul(x, w)
    schedule = fuse_and_check(ops.permute(y, (1, 0)), ops.unary("exp", y))
    assert len(schedule.externs) == 1


# ----------------------------------------------------------------------------- decisions
def test_a_node_reading_no_kernel_starts_one_without_refusals():
    x = buf((4, 5))
    first = ops.unary("abs", x)
    schedule = fuse_and_check(ops.unary("exp", first))
    decision = placement(schedule, first)
    assert decision.kind is DecisionKind.STARTED and decision.refusals == ()
    assert placement(schedule, schedule.outputs[0]).kind is DecisionKind.FUSED


def test_iteration_space_rule_refuses_a_reduction_over_other_axes():
    x = buf((64, 10))
    col = ops.reduce("sum", x, (0,))
    out = ops.reduce("max", ops.binary("sub", x, expand_to(col, x.shape)), (1,))
    decision = placement(fuse_and_check(out), out)
    assert decision.kind is DecisionKind.STARTED
    (refusal,) = decision.refusals
    assert refusal.rule is RefusalRule.ITERATION_SPACE
    assert refusal.node is out and refusal.kernel is col


def test_kernel_size_rule_refuses_a_full_kernel(monkeypatch):
    monkeypatch.setattr(fuse_group, "MAX_KERNEL_NODES", 3)
    chain = [buf((4, 5))]
    for _ in range(5):
        chain.append(ops.unary("exp", chain[-1]))
    schedule = fuse_and_check(chain[-1])
    assert [len(k.body) for k in schedule.kernels] == [3, 2]
    decision = placement(schedule, chain[4])
    (refusal,) = decision.refusals
    assert decision.kind is DecisionKind.STARTED and refusal.rule is RefusalRule.KERNEL_SIZE
    assert refusal.kernel is chain[1]


def test_kernel_inputs_rule_cuts_a_long_sum_of_loaded_values(monkeypatch):
    # a gradient summed over the steps of an unrolled RNN: every term is a matmul's output
    monkeypatch.setattr(fuse_group, "MAX_KERNEL_INPUTS", 4)
    terms = [ops.matmul(buf((3, 2), seed=i), buf((2, 4), seed=50 + i)) for i in range(10)]
    adds = [terms[0]]
    for term in terms[1:]:
        adds.append(ops.binary("add", adds[-1], term))
    schedule = fuse_and_check(adds[-1])
    assert [len(k.loads) for k in schedule.kernels] == [4, 4, 4]  # 4 terms, then 3 and 3 more
    decision = placement(schedule, adds[4])  # its kernel would read a fifth value
    (refusal,) = decision.refusals
    assert decision.kind is DecisionKind.STARTED and refusal.rule is RefusalRule.KERNEL_INPUTS
    assert "would read 5 values from memory" in refusal.message


def test_acyclic_rule_refuses_a_kernel_whose_result_the_node_reads_from_memory():
    x = buf((5, 5))
    e = ops.unary("exp", x)
    out = ops.binary("add", e, ops.permute(e, (1, 0)))
    decision = placement(fuse_and_check(out), out)
    (refusal,) = decision.refusals
    assert decision.kind is DecisionKind.STARTED
    assert refusal.rule is RefusalRule.READS_ITS_RESULT and refusal.kernel is e


def test_acyclic_rule_refuses_a_kernel_another_operand_depends_on():
    x = buf((5, 5))
    a = ops.unary("exp", x)
    b = ops.unary("neg", ops.permute(a, (1, 0)))
    out = ops.binary("add", a, b)
    decision = placement(fuse_and_check(out), out)
    (refusal,) = decision.refusals
    assert decision.kind is DecisionKind.FUSED, "it joins b's kernel, the next candidate"
    assert refusal.rule is RefusalRule.CYCLE and refusal.kernel is a and refusal.blocker is b


def test_externs_are_their_own_items():
    x, w = buf((8, 6)), buf((6, 5), seed=1)
    y = ops.matmul(x, w)
    schedule = fuse_and_check(ops.unary("exp", y))
    assert placement(schedule, y).kind is DecisionKind.EXTERN


@pytest.mark.parametrize("rule, make", [
    ("reduce-unit-axes", lambda x: ops.reduce("sum", ops.unary("neg", x), (1,))),
    ("drop-unit-axes", lambda x: ops.reduce("sum", ops.unary("neg", x), (0, 1))),
    ("pull-reshape-reduce",
     lambda x: ops.reduce("sum", ops.reshape(ops.unary("exp", x), (1, 6)), (1,))),
    ("pull-reshape-elementwise",
     lambda x: ops.unary("neg", ops.reshape(ops.unary("exp", x), (1, 6)))),
    ("movement-of-const", lambda x: ops.binary(
        "mul", x, ops.expand(ops.reshape(ops.const(2.0, (), "float32"), (1, 1)), (6, 1)))),
    ("view-of-base", lambda x: ops.unary("neg", ops.reshape(ops.reshape(x, (6,)), (6, 1)))),
    ("push-expand", lambda x: ops.binary("mul", x, ops.expand(
        ops.unary("exp", ops.reduce("sum", x, (0,))), (6, 1)))),
    ("transposed-product", lambda x: ops.permute(
        ops.matmul(ops.reshape(x, (2, 3)), ops.reshape(x, (3, 2))), (1, 0))),
    ("outer-product", lambda x: ops.permute(ops.matmul(x, ops.permute(x, (1, 0))), (1, 0))),
])
def test_normalisation_records_the_rule_it_applied(rule, make):
    out = make(buf((6, 1)))
    schedule = fuse_and_check(out)
    normalised = of_kind(schedule, DecisionKind.NORMALISED)
    assert rule in {d.rule for d in normalised}, [d.rule for d in normalised]
    assert all(len(d.nodes) == 2 and d.nodes[0].shape == d.nodes[1].shape for d in normalised)


def test_an_output_read_from_its_base_unchanged_is_a_decision():
    a = buf((12, 7))
    s = ops.reduce("sum", ops.unary("abs", a), (0, 1))
    mean = ops.reshape(ops.binary("div", s, ops.const(84.0, s.shape, s.dtype)), ())
    schedule = fuse_and_check(mean)
    (view,) = of_kind(schedule, DecisionKind.OUTPUT_VIEW)
    assert view.nodes == (mean, mean.inputs[0])


# ----------------------------------------------------------------------------- names, notes, dump
def test_kernel_names_are_readable_and_unique():
    x = buf((32, 10))
    _, e = softmax_parts(x)
    out = ops.binary("div", e, expand_to(ops.reduce("sum", e, (1,)), x.shape))
    (kernel,) = fuse_and_check(out).kernels
    assert kernel.name == "k0_max_sum_div_32x10"


def test_format_schedule_shows_items_loads_body_and_notes():
    x = buf((5, 5))
    e = ops.unary("exp", x)
    out = ops.binary("add", e, ops.permute(e, (1, 0)))
    text = format_schedule(fuse_and_check(out))
    assert "k0_exp_5x5  kernel over [5,5] elementwise" in text
    assert re.search(r"%\d+ : f32\[5,5\] = exp\(%0\)", text)
    assert "strides (1,5)" in text and "materialised" in text and "-> out" in text
    assert "[started; refused by reads-its-result]" in text and "[materialised]" in text


def test_every_item_explains_itself():
    x, w = buf((8, 6)), buf((6, 5), seed=1)
    y = ops.unary("exp", ops.matmul(x, w))
    schedule = fuse_and_check(ops.reduce("sum", y, (1,)), ops.permute(y, (1, 0)))
    assert all(item.decisions and item.notes == [str(d) for d in item.decisions]
               for item in schedule.items)


# ----------------------------------------------------------------------------- random graphs
SHAPES = [(4, 3), (2, 3, 4), (6,), (3, 1, 5)]


@st.composite
def random_graphs(draw) -> Graph:
    seed = draw(st.integers(0, 2**16))
    pool = [buf(draw(st.sampled_from(SHAPES)), seed=seed + k) for k in range(draw(st.integers(1, 3)))]

    def pick(pred=lambda n: True) -> Node | None:
        choices = [n for n in pool if pred(n) and n.dtype == "float32"]
        if len(choices) > 2 and draw(st.booleans()):
            choices = choices[-2:]  # favour recent nodes: deeper chains
        return draw(st.sampled_from(choices)) if choices else None

    for _ in range(draw(st.integers(1, 10))):
        x = pick()
        kind = draw(st.sampled_from(["unary", "binary", "binary", "where", "reduce", "norm", "argmax",
                                     "permute", "reshape", "slice", "pad", "expand", "matmul",
                                     "gather", "rand"]))
        rank = len(x.shape)
        if rank == 0 and kind in ("reduce", "norm", "argmax", "gather"):
            kind = "expand"
        if kind == "unary":
            op = draw(st.sampled_from(["neg", "abs", "tanh", "sin", "detach", "exp"]))
            node = ops.unary(op, ops.unary("tanh", x) if op == "exp" else x)
        elif kind in ("binary", "where"):
            y = pick(lambda n, shape=x.shape: n.shape == shape) if draw(st.booleans()) else None
            y = y if y is not None else ops.const(0.5, x.shape, "float32")
            if kind == "where":
                node = ops.where(ops.binary("lt", x, y), x, y)
            else:
                node = ops.binary(draw(st.sampled_from(["add", "mul", "sub", "maximum"])), x, y)
        elif kind in ("reduce", "norm"):
            axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1))))
            node = ops.reduce(draw(st.sampled_from(["sum", "max"])), x, axes)
            if kind == "norm":
                node = ops.binary("sub", x, ops.expand(ops.unary("detach", node), x.shape))
        elif kind == "argmax":
            node = ops.cast(ops.argmax(x, draw(st.integers(0, rank - 1))), "float32")
        elif kind == "permute":
            node = ops.permute(x, tuple(draw(st.permutations(range(rank)))))
            if x.op == "matmul" and draw(st.booleans()):
                pool.append(ops.unary("neg", x))  # the product is also used untransposed
        elif kind == "reshape":
            squeezed = tuple(d for d in x.shape if d != 1)
            node = ops.reshape(x, draw(st.sampled_from([(x.size,), (1, x.size), (x.size, 1),
                                                         (1, *x.shape), squeezed])))
        elif kind == "slice":
            ranges = []
            for d in x.shape:
                start = draw(st.integers(0, d - 1))
                ranges.append((start, draw(st.integers(start + 1, d)), draw(st.integers(1, 2))))
            node = ops.slice_(x, tuple(ranges))
        elif kind == "pad":
            place = tuple((draw(st.integers(0, 1)), draw(st.integers(1, 2))) for _ in x.shape)
            shape = tuple(s + (n - 1) * st_ + 1 + draw(st.integers(0, 1))
                          for (s, st_), n in zip(place, x.shape))
            node = ops.pad(x, shape, place)
        elif kind == "expand":
            if 1 not in x.shape:
                x = ops.reshape(x, (1, *x.shape))
            node = ops.expand(x, tuple(draw(st.integers(2, 3)) if d == 1 else d for d in x.shape))
        elif kind == "matmul":
            if rank != 2:
                continue
            node = ops.matmul(x, buf((x.shape[1], 3), seed=seed))
        elif kind == "gather":
            axis = draw(st.integers(0, rank - 1))
            shape = tuple(2 if d == axis else n for d, n in enumerate(x.shape))
            idx = buf(shape, "int64", seed=seed, low=0, high=x.shape[axis])
            node = ops.gather(x, idx, axis)
        else:
            key = buf((2,), "int64", seed=seed, low=0, high=1000)
            node = ops.binary("add", x, ops.rand(key, x.shape, "float32"))
        pool.append(node)
    outputs = [pool[-1]] + draw(st.lists(st.sampled_from(pool), max_size=2))
    return Graph(tuple(outputs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_run_like_the_interpreter(graph):
    fuse_and_check(*graph.outputs)


# ----------------------------------------------------------------------------- long sums
def _rule_decisions(schedule: Schedule, rule: str) -> list[FusionDecision]:
    return [d for d in of_kind(schedule, DecisionKind.NORMALISED) if d.rule == rule]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_long_cat_is_one_concat_extern_copying_each_piece(axis):
    from fusegrad.ir.passes.fuse_sums import CONCAT_MIN_PARTS
    parts = [buf(tuple(1 + i % 3 if d == axis else 3 for d in range(3)), seed=i)
             for i in range(CONCAT_MIN_PARTS)]
    schedule = fuse_and_check(ops.pads_sum(parts, axis))
    assert not schedule.kernels
    (ext,) = schedule.externs
    assert ext.node.op == "concat" and ext.node.attrs == (axis,)
    assert [ld.src for ld in ext.loads] == parts
    (decision,) = _rule_decisions(schedule, "concat")
    assert "tiling one axis" in decision.message


def test_a_short_cat_stays_one_kernel_with_what_reads_it():
    from fusegrad.ir.passes.fuse_sums import CONCAT_MIN_PARTS
    parts = [buf((2, 3), seed=i) for i in range(CONCAT_MIN_PARTS - 1)]
    schedule = fuse_and_check(ops.unary("exp", ops.pads_sum(parts, 0)))
    assert len(schedule.kernels) == 1 and not schedule.externs


@pytest.mark.parametrize("case", ["gap", "overlap", "two axes", "strided", "other use"])
def test_a_sum_of_pads_that_does_not_tile_one_axis_is_not_a_concat(case):
    parts = [buf((2, 3), seed=i) for i in range(9)]
    places = [((2 * i, 1), (0, 1)) for i in range(9)]
    shape = (18, 3)
    if case == "gap":
        places[4] = ((19, 1), (0, 1))
        shape = (21, 3)
    elif case == "overlap":
        places[4] = ((7, 1), (0, 1))
    elif case == "two axes":
        shape = (18, 4)
        places[4] = ((8, 1), (1, 1))
    elif case == "strided":
        places[4] = ((8, 2), (0, 1))
        shape = (19, 3)
    pads = [ops.pad(p, shape, pl) for p, pl in zip(parts, places)]
    acc = pads[0]
    partial = None
    for k, p in enumerate(pads[1:], 1):
        acc = ops.binary("add", acc, p)
        if k == 4:
            partial = acc
    outputs = (acc, partial) if case == "other use" else (acc,)
    schedule = fuse_and_check(*outputs)
    assert not any(e.node.op == "concat" for e in schedule.externs)


def _products(n: int, m: int, k: int, p: int, transposed: bool = False) -> list[Node]:
    out = []
    for i in range(n):
        a = ops.permute(buf((k, m), seed=2 * i), (1, 0)) if transposed else buf((m, k), seed=2 * i)
        out.append(ops.matmul(a, buf((k, p), seed=2 * i + 1)))
    return out


@pytest.mark.parametrize("transposed", [False, True])
def test_a_long_sum_of_products_is_one_product_of_joined_operands(transposed):
    from fusegrad.ir.passes.fuse_sums import STACK_MIN_PRODUCTS
    products = _products(STACK_MIN_PRODUCTS, 6, 2, 5, transposed)
    total = products[0]
    for p in products[1:]:
        total = ops.binary("add", total, p)
    bias = buf((6, 5), seed=99)
    schedule = fuse_and_check(ops.binary("add", total, bias))
    (product,) = [e for e in schedule.externs if e.node.op == "matmul"]
    assert product.node.inputs[0].shape == (6, 2 * STACK_MIN_PRODUCTS)
    joins = [e.node for e in schedule.externs if e.node.op == "concat"]
    assert len(joins) == 2
    if transposed:  # the pieces of a are joined as they are stored, then read transposed
        assert {j.attrs for j in joins} == {(0,)}
    assert len(_rule_decisions(schedule, "stacked-products")) == 1


def test_too_few_products_or_deep_ones_are_summed_as_they_are():
    from fusegrad.ir.passes.fuse_sums import STACK_MIN_PRODUCTS
    few = _products(STACK_MIN_PRODUCTS - 1, 6, 2, 5)
    deep = _products(STACK_MIN_PRODUCTS, 2, 40, 2)  # copying a and b moves more than summing
    for products in (few, deep):
        total = products[0]
        for p in products[1:]:
            total = ops.binary("add", total, p)
        schedule = fuse_and_check(total)
        assert sum(e.node.op == "matmul" for e in schedule.externs) == len(products)


def test_without_the_concat_extern_products_are_joined_with_pads():
    """The CUDA backend has no concat: the stacked product reads sums of pads."""
    from fusegrad.ir.passes.fuse_sums import STACK_MIN_PRODUCTS
    products = _products(STACK_MIN_PRODUCTS, 6, 2, 5)
    total = products[0]
    for p in products[1:]:
        total = ops.binary("add", total, p)
    graph = Graph((total,))
    schedule = fuse(graph, concat=False)
    check_structure(schedule, graph)
    assert [e.node.op for e in schedule.externs] == ["matmul"]
    (value,) = run_schedule(schedule)
    np.testing.assert_allclose(value, evaluate([total])[0].reshape(-1), rtol=2e-5, atol=1e-6)


def test_a_product_over_an_inner_dim_of_one_is_elementwise_and_fuses():
    """``(16, 1) @ (1, 8)`` is 128 single products: an elementwise product of the broadcast
    operands, in the kernel of what reads it, not an extern call."""
    a, b, c = buf((16, 1)), buf((1, 8), seed=1), buf((16, 8), seed=2)
    out = ops.binary("add", ops.matmul(a, b), c)
    schedule = fuse_and_check(out)
    assert not schedule.externs and len(schedule.kernels) == 1
    assert [d.rule for d in of_kind(schedule, DecisionKind.NORMALISED)] == ["outer-product"]
    batched = ops.matmul(buf((3, 4, 1)), buf((3, 1, 5), seed=3))
    assert not fuse_and_check(batched).externs
