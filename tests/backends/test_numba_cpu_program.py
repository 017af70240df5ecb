"""NumbaProgram: externs, intermediates, the buffer plan and the run loop."""
from __future__ import annotations

import numpy as np
import pytest
from parity import using_backend

import fusegrad as fg
from fusegrad.backends.numba_cpu import STATS, compile_schedule
from fusegrad.backends.numba_cpu.program import STAGE_MIN_PRODUCTS, plan_buffers
from fusegrad.ir import ops


@pytest.mark.parametrize("transpose", [False, True])
def test_matmul_extern_on_views(builder, leaf, check, rng, transpose):
    a = leaf(rng.standard_normal((4, 3)).astype(np.float32))
    w = leaf(rng.standard_normal((5, 3) if transpose else (3, 5)).astype(np.float32))
    rhs = ops.permute(w, (1, 0)) if transpose else w
    relu_a = ops.binary("maximum", a, ops.const(0.0, (4, 3), "float32"))
    mm = ops.matmul(relu_a, rhs)
    y = ops.binary("add", mm, ops.const(1.0, (4, 5), "float32"))
    b = builder([a, w])
    b.kernel("k_relu", [relu_a], (4, 3))
    b.extern("matmul", mm)
    b.kernel("k_add_one", [y], (4, 5))
    program = check(b.schedule([y]))
    assert ("np.ndarray(" in program.run_source) == transpose  # a transposed view goes to BLAS as is


def test_batched_matmul_with_broadcast_and_padded_operand(builder, leaf, check, rng):
    a = leaf(rng.standard_normal((2, 3, 4)).astype(np.float64))
    w = leaf(rng.standard_normal((1, 3, 5)).astype(np.float64))
    wb = ops.pad(ops.expand(w, (2, 3, 5)), (2, 4, 5), ((0, 1), (1, 1), (0, 1)))  # masked: zeros row
    mm = ops.matmul(a, wb)
    b = builder([a, w])
    b.extern("matmul", mm)
    check(b.schedule([mm]))


@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_add_extern(builder, leaf, check, rng, axis):
    src = leaf(rng.standard_normal((3, 4)).astype(np.float32))
    n = 5
    idx_shape = (3, 4)
    idx = leaf(rng.integers(0, n, idx_shape).astype(np.int64))
    out_shape = (n, 4) if axis == 0 else (3, n)
    sa = ops.scatter_add(idx, ops.permute(ops.permute(src, (1, 0)), (1, 0)), axis, out_shape)
    b = builder([src, idx])
    b.extern("scatter_add", sa)
    check(b.schedule([sa]))


def _three_kernel_schedule(builder, leaf, rng, shape=(4, 8)):
    x = leaf(rng.standard_normal(shape).astype(np.float32))
    h1 = ops.unary("exp", x)
    h2 = ops.binary("mul", ops.permute(h1, (1, 0)), ops.permute(h1, (1, 0)))
    y = ops.reduce("sum", h2, (1,))
    b = builder([x])
    b.kernel("k_exp", [h1], shape)
    b.kernel("k_square_t", [h2], h2.shape)
    b.kernel("k_rowsum", [y], h2.shape, (1,))
    return b.schedule([y])


def test_intermediates_reuse_blocks(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((16,)).astype(np.float32))
    t1 = ops.unary("exp", x)
    t2 = ops.unary("neg", t1)
    t3 = ops.binary("add", t2, t2)
    t4 = ops.unary("sin", ops.slice_(t3, ((0, 8, 1),)))
    y = ops.unary("cos", t4)
    b = builder([x])
    for i, node in enumerate([t1, t2, t3, t4, y]):
        b.kernel(f"k_step{i}", [node], node.shape)
    schedule = b.schedule([y, x])
    plan = plan_buffers(schedule)
    assert len(plan.nodes) == 4 and len(plan.blocks) == 2           # t3 reuses t1's, t4 t2's
    assert plan.total_bytes == 2 * 64 and plan.no_reuse_bytes == 3 * 64 + 32
    program = check(schedule)
    out = program.run([x.attrs[0].data])
    assert out[1] is not x.attrs[0].data                             # an output that is an input:
    np.testing.assert_array_equal(out[1], x.attrs[0].data)           # a copy, never an alias
    text = program.describe()
    assert "k_step0" in text and "without reuse 224 B" in text and "block" in text


def test_outputs_are_fresh_and_duplicates_distinct(builder, leaf, rng):
    x = leaf(rng.standard_normal((3,)).astype(np.float32))
    y = ops.unary("exp", x)
    b = builder([x])
    b.kernel("k_exp3", [y], (3,))
    program = compile_schedule(b.schedule([y, y]))
    first = program.run([x.attrs[0].data])
    second = program.run([x.attrs[0].data])
    assert first[0] is not second[0] and first[0] is not first[1]
    np.testing.assert_array_equal(first[0], second[1])


def test_three_kernel_program_and_kernel_reuse(builder, leaf, check, rng):
    schedule = _three_kernel_schedule(builder, leaf, rng)
    check(schedule)
    before = STATS.kernels_reused
    again = compile_schedule(_three_kernel_schedule(builder, leaf, rng))  # same kernels, same process
    assert STATS.kernels_reused == before + 3
    assert [s.hash for s in again.sources] == [s.hash for s in compile_schedule(schedule).sources]


def test_end_to_end_through_fuse(leaf, rng):
    from fusegrad.backends.interpreter import evaluate
    from fusegrad.ir.graph import Graph
    from fusegrad.ir.passes.fuse import fuse

    x = leaf(rng.standard_normal((6, 4)).astype(np.float32))
    w = leaf(rng.standard_normal((4, 5)).astype(np.float32))
    bias = leaf(rng.standard_normal((5,)).astype(np.float32))
    labels = leaf(rng.integers(0, 5, (6, 1)).astype(np.int64))
    keys = leaf(np.array([7, 100], np.int64))
    h = ops.binary("add", ops.matmul(x, w), ops.expand(ops.reshape(bias, (1, 5)), (6, 5)))
    keep = ops.binary("lt", ops.rand(keys, (6, 5), "float32"), ops.const(0.8, (6, 5), "float32"))
    h = ops.where(keep, ops.unary("tanh", h), ops.const(0.0, (6, 5), "float32"))
    m = ops.reduce("max", h, (1,))
    z = ops.binary("sub", h, ops.expand(m, (6, 5)))
    lse = ops.unary("log", ops.reduce("sum", ops.unary("exp", z), (1,)))
    picked = ops.gather(z, labels, 1)
    loss = ops.reduce("sum", ops.binary("sub", lse, picked), (0, 1))
    pred = ops.argmax(h, 1)
    graph = Graph((loss, pred, h))
    program = compile_schedule(fuse(graph))
    schedule = program.schedule
    got = program.run([n.attrs[0].data for n in schedule.inputs])
    for g, e, node in zip(got, evaluate(graph.outputs), graph.outputs):
        np.testing.assert_allclose(g.reshape(node.shape), e, rtol=1e-5, atol=1e-5)
    assert "kernel" in program.describe()


def test_timed_run_gives_the_same_outputs_and_a_reading_around_each_item(builder, leaf, rng):
    from fusegrad.backends.numba_cpu.program import timed_run
    schedule = _three_kernel_schedule(builder, leaf, rng)
    program = compile_schedule(schedule)
    inputs = [n.attrs[0].data for n in schedule.inputs]
    expected = program.run(inputs)
    run, stamps = timed_run(program)
    for got, want in zip(run(inputs), expected):
        np.testing.assert_array_equal(got, want)
    (readings,) = stamps
    assert len(readings) == 2 + 2 * len(schedule.items)
    assert readings == sorted(readings)
    assert program.run_source.count("  # [") == len(schedule.items)  # items marked by index


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_in_range_kernel(dtype):
    from fusegrad.backends.numba_cpu.checks import in_range_kernel
    check = in_range_kernel(dtype)
    bounds = np.array([0, 5], np.int64)
    assert check(np.array([0, 4, 2], dtype), bounds)
    assert not check(np.array([0, 5], dtype), bounds)
    assert check(np.array([], dtype), bounds)
    if dtype != "uint8":
        assert not check(np.array([3, -1], dtype), bounds)


@pytest.mark.parametrize("products", [STAGE_MIN_PRODUCTS - 1, STAGE_MIN_PRODUCTS])
def test_a_transposed_operand_of_many_products_is_made_contiguous_once(builder, leaf, check, rng,
                                                                       products):
    # an RNN's h_t = h_{t-1} @ W^T: every step reads the same transposed weight
    w = leaf(rng.standard_normal((5, 3)).astype(np.float32))
    wt = ops.permute(w, (1, 0))
    xs = [leaf(rng.standard_normal((2, 3)).astype(np.float32)) for _ in range(products)]
    b = builder([w, *xs])
    outs = []
    for x in xs:
        mm = ops.matmul(x, wt)
        b.extern("matmul", mm)
        outs.append(mm)
    program = check(b.schedule(outs))
    staged = [line for line in program.run_source.splitlines() if "np.copyto(stage" in line]
    assert len(staged) == (products >= STAGE_MIN_PRODUCTS)
    # the products read the transposed view itself, or only the staging copy does
    assert program.run_source.count("np.ndarray(") == (1 if staged else products)


@pytest.mark.parametrize("read_after", [False, True])
def test_pieces_of_a_concatenation_along_its_first_axis_are_written_in_place(
        builder, leaf, check, rng, read_after):
    """Each piece is a slice of the result's block (a recurrent layer's per-step gradients
    stacked for one weight-gradient product): the concatenation copies nothing; a piece read
    after it keeps its value there."""
    x = leaf(rng.standard_normal((2, 3)).astype(np.float32))
    pieces = [ops.unary("exp", x), ops.unary("neg", x), ops.unary("sin", x)]
    stacked = ops.concat(pieces, 0)
    y = ops.reduce("sum", stacked, (0,))
    outputs = [y]
    b = builder([x])
    for k, p in enumerate(pieces):
        b.kernel(f"k_piece{k}", [p], p.shape)
    b.extern("concat", stacked)
    b.kernel("k_sum", [y], (6, 3), (0,))
    if read_after:
        late = ops.binary("mul", pieces[1], ops.const(2.0, (2, 3), "float32"))
        b.kernel("k_late", [late], late.shape)
        outputs.append(late)
    schedule = b.schedule(outputs)
    plan = plan_buffers(schedule)
    assert plan.placed == {3}
    assert [plan.offset_of[p] for p in pieces] == [0, 6, 12]
    assert len({plan.block_of[n] for n in (*pieces, stacked)}) == 1
    program = check(schedule)
    assert "its pieces were written in place" in program.run_source
    assert "np.concatenate" not in program.run_source
    assert "from element 6" in program.describe()


def test_a_concatenation_along_a_later_axis_or_of_an_input_copies(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((2, 3)).astype(np.float32))
    e = ops.unary("exp", x)
    across = ops.concat([e, ops.unary("neg", x)], 1)     # pieces strided in the result
    with_input = ops.concat([ops.unary("sin", x), x], 0)
    b = builder([x])
    b.kernel("k_exp", [e], e.shape)
    b.kernel("k_neg", [across.inputs[1]], (2, 3))
    b.extern("concat", across)
    b.kernel("k_sin", [with_input.inputs[0]], (2, 3))
    b.extern("concat", with_input)
    y = ops.binary("add", ops.reshape(across, (4, 3)), with_input)
    b.kernel("k_add", [y], (4, 3))
    schedule = b.schedule([y])
    assert plan_buffers(schedule).placed == set()
    program = check(schedule)
    assert program.run_source.count("np.concatenate") == 2


@pytest.mark.parametrize("inner_first", [True, False])
def test_a_concatenation_of_a_placed_concatenation_copies_it(builder, leaf, check, rng,
                                                             inner_first):
    """The inner result has a block of its own, so the outer concatenation copies it (and its
    other pieces): a placed result is no piece."""
    x = leaf(rng.standard_normal((2, 3)).astype(np.float32))
    p0, p1, q = ops.unary("exp", x), ops.unary("neg", x), ops.unary("sin", x)
    inner = ops.concat([p0, p1], 0)
    outer = ops.concat([inner, q] if inner_first else [q, inner], 0)
    y = ops.reduce("sum", outer, (1,))
    b = builder([x])
    for k, p in enumerate((p0, p1, q)):
        b.kernel(f"k_piece{k}", [p], p.shape)
    b.extern("concat", inner)
    b.extern("concat", outer)
    b.kernel("k_sum", [y], (6, 3), (1,))
    schedule = b.schedule([y])
    plan = plan_buffers(schedule)
    assert plan.placed == {3}
    assert outer not in plan.offset_of and inner not in plan.offset_of
    program = check(schedule)
    assert program.run_source.count("np.concatenate") == 1


def test_nested_cats_of_tensors_match_numpy():
    """Each inner concatenation is placed; the outer one copies their results."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(8)]
    with using_backend("numba_cpu"):
        y = (fg.cat([fg.cat([(fg.tensor(x) * (0.5 * k + 1)).exp() for k in range(8)], 0)
                     for x in xs], 0) * 2.0).sum(1)
        got = y.numpy()
    rows = [np.exp(x * np.float32(0.5 * k + 1)) for x in xs for k in range(8)]
    want = (np.concatenate(rows, 0) * 2).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
