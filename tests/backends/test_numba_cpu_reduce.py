"""Reduce kernels of the Numba backend against the interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fusegrad.ir import ops


@pytest.mark.parametrize("axes", [(1,), (0,), (0, 2), (0, 1, 2)])
def test_sum_and_max_over_axes(builder, leaf, check, rng, axes):
    x = leaf(rng.standard_normal((3, 4, 5)).astype(np.float32))
    s = ops.reduce("sum", x, axes)
    m = ops.reduce("max", ops.unary("exp", x), axes)
    b = builder([x])
    b.kernel(f"k_sum_max_{'_'.join(map(str, axes))}", [s, m], x.shape, axes)
    check(b.schedule([s, m]))


@pytest.mark.parametrize("axis", [0, 1])
def test_argmax_first_index_and_nan(builder, leaf, check, axis):
    vals = np.array([[1.0, 3.0, 3.0, -np.inf],
                     [np.nan, 2.0, np.nan, 5.0],
                     [-np.inf, -np.inf, -np.inf, -np.inf],
                     [0.5, 7.0, np.nan, 7.0]], np.float32)
    x = leaf(vals)
    a = ops.argmax(x, axis)
    m = ops.reduce("max", x, (axis,))
    b = builder([x])
    b.kernel(f"k_argmax_{axis}", [a, m], (4, 4), (axis,))
    check(b.schedule([a, m]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_row_sums_and_maxima_are_vector_reductions(builder, leaf, check, rng, dtype):
    """Rows long enough for LLVM's vectorised loops (and their scalar tails): the sum's add may
    reassociate (``sum_step``), the max is NaN-propagating (``max_step``), wherever the NaN or
    the largest value sits, and every run gives the same bits."""
    vals = (rng.standard_normal((6, 1003)) * 10).astype(dtype)
    vals[1, 0] = vals[2, 517] = vals[3, 1002] = np.nan    # first, middle, scalar tail
    vals[4] = -np.inf
    vals[5, 1001] = 1e6                                  # the largest in the tail
    x = leaf(vals)
    s = ops.reduce("sum", x, (1,))
    m = ops.reduce("max", x, (1,))
    b = builder([x])
    b.kernel(f"k_long_rows_{dtype}", [s, m], vals.shape, (1,))
    program = check(b.schedule([s, m]), runs=3)
    src = program.sources[0].source
    assert ("= sum_step(acc" in src) == (dtype == "float32")  # float64 sums keep their order
    assert "= max_step(acc" in src and "!=" not in src
    got = program.run([vals.reshape(-1)])
    assert np.isnan(got[1][:4]).tolist() == [False, True, True, True]
    assert got[1][4] == -np.inf and got[1][5] == 1e6
    exact = vals[0].astype(np.float64).sum()
    assert abs(float(got[0][0]) - exact) <= 1e-6 * np.abs(vals[0]).sum()
    again = program.run([vals.reshape(-1)])
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, again))


def test_integer_and_bool_reductions(builder, leaf, check):
    x = leaf(np.array([[2**31 - 1, 1, -5], [3, -2**31, 4]], np.int32))
    s = ops.reduce("sum", x, (1,))
    m = ops.reduce("max", x, (0,))
    b = builder([x])
    b.kernel("k_int_sum", [s], (2, 3), (1,))
    b.kernel("k_int_max", [m, ops.argmax(x, 0)], (2, 3), (0,))
    flag = ops.binary("lt", x, ops.const(0, (2, 3), "int32"))
    any_neg = ops.reduce("sum", flag, (1,))
    b.kernel("k_any", [any_neg], (2, 3), (1,))
    check(b.schedule([s, m, ops.argmax(x, 0), any_neg]))


def _softmax(x, axis):
    full = x.shape
    m = ops.reduce("max", x, (axis,), "model.py:10")
    e = ops.unary("exp", ops.binary("sub", x, ops.expand(m, full), "model.py:10"), "model.py:10")
    s = ops.reduce("sum", e, (axis,), "model.py:11")
    r = ops.unary("recip", s, "model.py:11")
    return ops.binary("mul", e, ops.expand(r, full), "model.py:11"), s


@pytest.mark.parametrize("axis", [1, 0])
def test_softmax_with_kept_nodes_and_epilogue(builder, leaf, check, rng, axis):
    x = leaf((rng.standard_normal((5, 7)) * 4).astype(np.float32))
    y, s = _softmax(x, axis)
    log_s = ops.unary("log", s)                          # a kept-level output too
    b = builder([x])
    b.kernel(f"k_softmax_{axis}", [y, log_s], (5, 7), (axis,))
    program = check(b.schedule([y, log_s]))
    src = program.sources[0].source
    assert src.count("= _fg_exp32(") == 2                # recomputed in the sum stage and epilogue
    assert "# epilogue" in src


def test_layernorm_uses_kept_node_in_a_later_reduction(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((3, 8)).astype(np.float64))
    full, n = (3, 8), ops.const(1 / 8, (3, 1), "float64")
    mean = ops.binary("mul", ops.reduce("sum", x, (1,)), n)
    d = ops.binary("sub", x, ops.expand(mean, full))
    var = ops.binary("mul", ops.reduce("sum", ops.binary("mul", d, d), (1,)), n)
    inv = ops.unary("recip", ops.unary("sqrt", ops.binary("add", var, ops.const(1e-5, (3, 1), "float64"))))
    y = ops.binary("mul", d, ops.expand(inv, full))
    b = builder([x])
    b.kernel("k_layernorm", [y, mean], full, (1,))
    check(b.schedule([y, mean]))


def test_independent_reductions_share_one_pass(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 6)).astype(np.float32))
    s = ops.reduce("sum", x, (1,))
    sq = ops.reduce("sum", ops.binary("mul", x, x), (1,))
    b = builder([x])
    b.kernel("k_moments", [s, sq], (4, 6), (1,))
    program = check(b.schedule([s, sq]))
    assert program.sources[0].source.count("for i1 in range(6)") == 1


def test_reduction_with_broadcast_and_kept_loads(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 6)).astype(np.float32))
    w = leaf(rng.standard_normal((6,)).astype(np.float32))
    c = leaf(rng.standard_normal((4, 1)).astype(np.float32))
    wx = ops.binary("mul", x, ops.expand(ops.reshape(w, (1, 6)), (4, 6)))
    y = ops.binary("add", ops.reduce("sum", wx, (1,)), c)
    b = builder([x, w, c])
    b.kernel("k_dot_rows", [y], (4, 6), (1,))
    check(b.schedule([y]))


def test_full_reduction_to_scalar(builder, leaf, check, rng, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_PARALLEL_THRESHOLD", "4")
    x = leaf(rng.standard_normal((3, 5)).astype(np.float32))
    s = ops.reduce("sum", ops.binary("mul", x, x), (0, 1))
    b = builder([x])
    b.kernel("k_sumsq", [s], (3, 5), (0, 1))
    program = check(b.schedule([s]))
    assert not program.sources[0].parallel               # no outer loop to split


def test_parallel_reduce_keeps_accumulators_local(builder, leaf, check, rng, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_PARALLEL_THRESHOLD", "16")
    x = leaf((rng.standard_normal((16, 9)) * 3).astype(np.float32))
    y, _ = _softmax(x, 1)
    b = builder([x])
    b.kernel("k_softmax_parallel", [y], (16, 9), (1,))
    program = check(b.schedule([y]))
    assert program.sources[0].parallel


def test_size_one_reduced_axis(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 1)).astype(np.float32))
    y, _ = _softmax(x, 1)
    b = builder([x])
    b.kernel("k_softmax_width1", [y, ops.argmax(x, 1)], (4, 1), (1,))
    check(b.schedule([y, ops.argmax(x, 1)]))


def test_leading_axis_reductions_nest_reduced_loops_outside(builder, leaf, check, rng):
    """Sums and maxes over leading axes (a bias gradient's column sum) run with the reduced loops
    outside and one accumulator per kept position; a full-shape output that needs no reduction
    is written in the same pass, one that does in an epilogue, and kept outputs after."""
    x = leaf(rng.standard_normal((6, 4, 5)).astype(np.float32))
    n = leaf(rng.integers(-3, 4, (6, 4, 5)).astype(np.int64))
    padded = ops.pad(x, (6, 4, 7), ((0, 1), (0, 1), (1, 1)))       # masked reads
    relu = ops.where(ops.binary("lt", padded, ops.const(0.0, padded.shape, "float32")),
                     ops.const(0.0, padded.shape, "float32"), padded)
    s = ops.reduce("sum", relu, (0, 1))
    m = ops.reduce("max", padded, (0, 1))
    counts = ops.reduce("sum", ops.binary("lt", ops.pad(n, (6, 4, 7), ((0, 1), (0, 1), (1, 1))),
                                          ops.const(0, (6, 4, 7), "int64")), (0, 1))
    isum = ops.reduce("sum", ops.pad(n, (6, 4, 7), ((0, 1), (0, 1), (1, 1))), (0, 1))
    centred = ops.binary("sub", padded, ops.expand(m, padded.shape))   # needs the max: epilogue
    mean = ops.binary("mul", s, ops.const(1 / 24, s.shape, "float32"))  # a kept output
    b = builder([x, n])
    k = b.kernel("k_leading", [s, m, counts, isum, relu, centred, mean], padded.shape, (0, 1))
    program = check(b.schedule([s, m, counts, isum, relu, centred, mean]))
    source = next(c.source.source for c in program.kernels if c.kernel is k)
    assert "reduced axes outermost" in source and "epilogue" in source


def test_a_channel_sum_of_a_channels_last_tensor_nests_the_channels_inside(builder, leaf,
                                                                           check, rng):
    """A per-channel sum of an NHWC array read as NCHW (a batch norm after a convolution's
    GEMM): its reduced axes are not leading, but every load walks the channels with stride 1,
    so the reduced loops go outside; each channel still adds its values in (n, h, w) order."""
    from fusegrad.backends.numba_cpu import kernel_source
    x = rng.standard_normal((4, 3, 5, 8)).astype(np.float32)
    nchw = ops.permute(leaf(x), (0, 3, 1, 2))
    s = ops.reduce("sum", nchw, (0, 2, 3))
    b = builder([nchw.inputs[0]])
    k = b.kernel("k_channels", [s], nchw.shape, (0, 2, 3))
    assert "reduced axes outermost" in kernel_source(k, parallel=False).source
    program = check(b.schedule([s]))
    want = np.zeros(8)
    for pos in np.ndindex(4, 3, 5):
        want += x[pos].astype(np.float64)
    got = program.run([x.reshape(-1)])[0]
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # an NCHW array summed the same way keeps the reduction innermost (its stride 1 is w's)
    plain = leaf(x.transpose(0, 3, 1, 2).copy())
    k2 = builder([plain]).kernel("k_nchw", [ops.reduce("sum", plain, (0, 2, 3))], plain.shape,
                                 (0, 2, 3))
    assert "reduced axes outermost" not in kernel_source(k2, parallel=False).source


def test_inner_and_two_pass_reductions_keep_the_usual_nesting(builder, leaf):
    from fusegrad.backends.numba_cpu import kernel_source
    x = leaf(np.ones((4, 6), np.float32))
    b = builder([x])
    inner = b.kernel("k_rows", [ops.reduce("sum", x, (1,))], (4, 6), (1,))
    y, _ = _softmax(x, 0)  # max, then a sum that needs it: two passes
    two_pass = b.kernel("k_softmax0", [y], (4, 6), (0,))
    for kernel in (inner, two_pass):
        assert "reduced axes outermost" not in kernel_source(kernel, parallel=False).source


def test_mask_conditions_on_outer_loops_are_hoisted_then_split(builder, leaf, check, rng):
    """A concatenation written as a sum of pads (as an unrolled RNN's backward stacks its
    steps): each piece's mask depends on the outer step index only, so it is one flag per step,
    and the step loop runs as one segment per step, where every flag is known."""
    parts = [leaf(rng.standard_normal((3, 1, 8)).astype(np.float32)) for _ in range(4)]
    padded = [ops.pad(p, (3, 4, 8), ((0, 1), (i, 1), (0, 1))) for i, p in enumerate(parts)]
    total = padded[0]
    for p in padded[1:]:
        total = ops.binary("add", total, p)
    s = ops.reduce("sum", total, (0, 1))
    b = builder(parts)
    k = b.kernel("k_stack", [total, s], (3, 4, 8), (0, 1))
    program = check(b.schedule([total, s]))
    source = next(c.source.source for c in program.kernels if c.kernel is k)
    flags = [line.strip() for line in source.splitlines() if line.strip().startswith("c")
             and " = i1" in line]
    # the step loop is split at its flags' bounds: each step reads its one part, unmasked
    assert not flags and "loop i1 runs as 4 segments" in source, source
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    assert "] if " not in code and code.count("= in") == 4, source  # one plain read per step
    assert "i1_s1 = 1" in code and "range(1, 2)" not in code  # a one-step segment is no loop



def test_float_sums_add_in_index_order_whatever_the_kernel(builder, leaf, check, rng):
    """No ``fastmath``: a float32 sum adds into a float64 (its adds alone may reassociate, in
    vector lanes), so for terms that do not cancel (these) the same sum in two kernels of
    different loop nests rounds to the same float32 bits, and a program fused one way
    (compiled) and another (eager) agree exactly."""
    x = leaf(rng.standard_normal((3, 37, 11)).astype(np.float32))
    zeros = leaf(np.zeros((3, 1, 11), np.float32))
    merged = ops.reduce("sum", x, (1, 2))                  # one reduced loop of 407
    shifted = ops.binary("add", x, ops.expand(zeros, x.shape))
    nested = ops.reduce("sum", shifted, (1, 2))            # the broadcast keeps 37 x 11 apart
    b = builder([x, zeros])
    b.kernel("k_sum", [merged], x.shape, (1, 2))
    b.kernel("k_sum_add", [nested], x.shape, (1, 2))
    program = check(b.schedule([merged, nested]))
    assert not any("fastmath" in s.source for s in program.sources)
    assert "range(407)" in program.sources[0].source
    assert "range(37)" in program.sources[1].source
    got = program.run([x.attrs[0].data, zeros.attrs[0].data])
    np.testing.assert_array_equal(got[0], got[1])
    data, want = x.attrs[0].data.reshape(3, 37, 11), np.zeros(3)
    for i in range(37):
        for k in range(11):
            want += data[:, i, k].astype(np.float64)
    np.testing.assert_array_equal(got[0], want.astype(np.float32))


def _source(program, kernel) -> str:
    return next(c.source.source for c in program.kernels if c.kernel is kernel)


def _in_order(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The float32 sums over ``axes`` that a float64 accumulator adding one term after another
    in index order gives (the order every kernel keeps)."""
    kept = [d for d in range(values.ndim) if d not in axes]
    moved = np.moveaxis(values.astype(np.float64), kept, list(range(len(kept))))
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    return np.cumsum(flat, axis=-1)[..., -1].astype(np.float32)


def test_relu_gradient_channel_sum_stores_the_gradient_first_and_jams(builder, leaf, check, rng):
    """A relu gradient that is both an output and summed per channel (a conv's bias gradient):
    the gradient is stored in a pass of its own (its ``where`` a vector select there, not a
    branch in the sum) and the sum reads it back, four channels per pass. The sums keep their
    index order bit for bit."""
    from fusegrad.backends.lowering import lower
    from fusegrad.backends.numba_cpu import kernel_source
    shape = (3, 8, 10, 10)
    flags, values = rng.random(shape) < 0.5, rng.standard_normal(shape).astype(np.float32)
    mask, g = leaf(flags), leaf(values)
    grad = ops.where(mask, ops.const(0.0, shape, "float32"), g)
    s = ops.reduce("sum", grad, (0, 2, 3))
    b = builder([mask, g])
    k = b.kernel("k_relu_grad_sum", [grad, s], shape, (0, 2, 3))
    program = check(b.schedule([grad, s]))
    source = next(c.source.source for c in program.kernels if c.kernel is k)
    assert "stored first" in source and "jammed: loop i1" in source
    first, reduction = source.index("# full-shape outputs the reductions read"), source.index("= sum(")
    assert first < reduction and source.count(" if ") == 4     # the select only where it is stored
    got = program.run([mask.attrs[0].data, g.attrs[0].data])
    want = np.where(flags, np.float32(0), values)
    np.testing.assert_array_equal(got[0].reshape(shape), want)
    np.testing.assert_array_equal(got[1].reshape(-1), _in_order(want, (0, 2, 3)))
    assert kernel_source(k, False).source == source
    # a GPU renderer lowers without ``cpu``: the sum computes the where itself
    assert not any("stored first" in line for line in lower(k, False).listing)


@pytest.mark.parametrize("rows,parallel", [(8, False), (12, False), (8, True)])
def test_jammed_row_reductions_match_one_row_at_a_time(builder, leaf, check, rng, monkeypatch,
                                                       rows, parallel):
    """Rows of 300: a centred sum of squares (a max, then a sum that needs it, then an
    epilogue), an argmax with NaNs and ties, an int sum and a sum of squares run four rows per
    pass (in a ``prange`` too); each row's result is the one a row at a time gives, bit for
    bit."""
    if parallel:
        monkeypatch.setenv("FUSEGRAD_PARALLEL_THRESHOLD", "16")
    data = (rng.standard_normal((rows, 300)) * 4).astype(np.float32)
    data[1, 17] = np.nan
    data[2, [5, 250]] = 99.0
    x = leaf(data)
    ints = rng.integers(-9, 9, (rows, 300)).astype(np.int64)
    n = leaf(ints)
    m = ops.reduce("max", x, (1,))
    centred = ops.binary("sub", x, ops.expand(m, x.shape))
    s = ops.reduce("sum", ops.binary("mul", centred, centred), (1,))
    y = ops.binary("mul", centred, ops.expand(s, x.shape))        # an epilogue
    sq = ops.reduce("sum", ops.binary("mul", x, x), (1,))
    a = ops.argmax(x, 1)
    isum = ops.reduce("sum", n, (1,))
    b = builder([x, n])
    k1 = b.kernel("k_centred_rows", [y, s], (rows, 300), (1,))
    k2 = b.kernel("k_argmax_rows", [a, isum, sq], (rows, 300), (1,))
    program = check(b.schedule([y, s, sq, a, isum]))
    assert "= max(" in _source(program, k1) and "# epilogue" in _source(program, k1)
    for k in (k1, k2):
        source = next(c.source.source for c in program.kernels if c.kernel is k)
        loop = "prange" if parallel else "range"
        assert "jammed: loop i0" in source and f"for i0j in {loop}({rows // 4})" in source
    got = program.run([x.attrs[0].data, n.attrs[0].data])
    centred_np = data - np.max(data, axis=1, keepdims=True)
    np.testing.assert_array_equal(got[1].reshape(-1), _in_order(centred_np * centred_np, (1,)))
    np.testing.assert_array_equal(got[2].reshape(-1), _in_order(data * data, (1,)))
    np.testing.assert_array_equal(got[3].reshape(-1), np.argmax(data, 1))
    np.testing.assert_array_equal(got[4].reshape(-1), ints.sum(1))


def test_short_odd_or_long_reductions_are_not_jammed(builder, leaf):
    """Not jammed: 100 elements per row (the core overlaps rows by itself), 6 rows (4 does not
    divide them), a softmax (its exp helper would be inlined 4 times: compile time) and a body
    of more than ``JAM_MAX_STATEMENTS`` statements."""
    from fusegrad.backends.numba_cpu import kernel_source
    x = leaf(np.ones((8, 300), np.float32))
    b = builder([leaf(np.ones((8, 100), np.float32)), leaf(np.ones((6, 300), np.float32)), x])
    short = b.kernel("k_short", [ops.reduce("sum", b.inputs[0], (1,))], (8, 100), (1,))
    odd = b.kernel("k_odd", [ops.reduce("sum", b.inputs[1], (1,))], (6, 300), (1,))
    y, _ = _softmax(x, 1)
    softmax = b.kernel("k_softmax_rows", [y], (8, 300), (1,))
    long = x
    for _ in range(9):
        long = ops.binary("mul", ops.binary("add", long, x), x)
    longer = b.kernel("k_long", [ops.reduce("sum", long, (1,))], (8, 300), (1,))
    for kernel in (short, odd, softmax, longer):
        assert "jammed" not in kernel_source(kernel, parallel=False).source


def test_an_output_of_a_later_stage_is_stored_before_it_and_computed_once(builder, leaf, check,
                                                                          rng):
    """exp(x - max) is an output (a cross-entropy keeps it for its gradient) and the operand of
    the sum that follows the max: it is stored after the max, before the sum, which reads it
    back, so each exp is computed once."""
    x = leaf((rng.standard_normal((8, 40)) * 4).astype(np.float32))
    m = ops.reduce("max", x, (1,))
    e = ops.unary("exp", ops.binary("sub", x, ops.expand(m, x.shape)))
    s = ops.reduce("sum", e, (1,))
    b = builder([x])
    b.kernel("k_exp_sum", [e, s], (8, 40), (1,))
    program = check(b.schedule([e, s]))
    src = program.sources[0].source
    assert src.count("= _fg_exp32(") == 1 and "# note: stored first:" in src
    assert src.index("= max(") < src.index("stored first\n") < src.index("= sum(")


def test_jammed_rows_keep_the_flags_of_masks_on_the_kept_loop(builder, leaf, check, rng):
    """A padded row (a mask on the kept axis) has its condition hoisted into the kept loop:
    jammed, each of the 4 positions computes its own flag."""
    data = rng.standard_normal((6, 300)).astype(np.float32)
    x = leaf(data)
    padded = ops.pad(x, (8, 300), ((1, 1), (0, 1)))
    s = ops.reduce("sum", padded, (1,))
    b = builder([x])
    k = b.kernel("k_padded_rows", [s], (8, 300), (1,))
    program = check(b.schedule([s]))
    source = next(c.source.source for c in program.kernels if c.kernel is k)
    assert "jammed: loop i0" in source and re.search(r"c\d+_3 = i0_3 >= 1", source)
    got = program.run([x.attrs[0].data])[0].reshape(-1)
    np.testing.assert_array_equal(got, np.concatenate([[0], _in_order(data, (1,)), [0]]))


def test_a_split_keeps_a_gather_position_that_folds_to_a_literal():
    """A gather whose positions are padded (zeros past the indices): the split segment of the
    padding reads the position as the literal 0, and the gather's read must use it (the folding
    once dropped the assign and left the read naming it)."""
    import fusegrad as fg
    import fusegrad.nnlib.functional as fgF
    t = fg.tensor(np.arange(10, dtype=np.float32))
    i = fg.tensor(np.array([1, 2, 3, 4]))
    got = fg.gather(t, 0, fgF.pad(i, (0, 2))).numpy()
    np.testing.assert_array_equal(got, np.array([1, 2, 3, 4, 0, 0], np.float32))
