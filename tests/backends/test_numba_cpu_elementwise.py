"""Elementwise kernels of the Numba backend against the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad.backends.lowering import lower
from fusegrad.backends.lowering.loopnest import Loop, walk
from fusegrad.backends.numba_cpu import compile_schedule, kernel_source
from fusegrad.ir import ops


def test_fused_chain_is_one_flat_loop(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 6)).astype(np.float32), "model.py:3")
    w = leaf(rng.standard_normal((4, 6)).astype(np.float32))
    y = ops.unary("tanh", ops.binary("add", ops.binary("mul", x, w), ops.const(0.5, (4, 6), "float32")),
                  "model.py:4")
    b = builder([x, w])
    k = b.kernel("k_mul_add_tanh_4x6", [y], (4, 6))
    program = check(b.schedule([y]))
    src = program.sources[0].source
    # every operand is read at the loop position: the length is an argument (size-free code)
    assert "for i0 in range(n):" in src and "range(6)" not in src
    assert program.sources[0].extent == 24 and "def k_mul_add_tanh_n(" in src
    assert "np.float32(0.5)" in src and "model.py:4" in src
    assert kernel_source(k, False).hash == program.sources[0].hash


def _update(leaf, rng, shape, swap: bool):
    """``p - lr * (g + wd * p)`` over ``shape``, its commutative operands built in one order
    or the other (as structural keys of different shapes order them)."""
    p = leaf(rng.standard_normal(shape).astype(np.float32))
    g = leaf(rng.standard_normal(shape).astype(np.float32))
    lr, wd = leaf(np.array([0.1], np.float32)), leaf(np.array([0.01], np.float32))

    def scalar(s):
        return ops.expand(ops.reshape(s, (1,) * len(shape)), shape)

    def add(a, b):
        return ops.binary("add", b, a) if swap else ops.binary("add", a, b)

    def mul(a, b):
        return ops.binary("mul", b, a) if swap else ops.binary("mul", a, b)

    step = mul(scalar(lr), add(g, mul(scalar(wd), p)))
    return [p, g, lr, wd], ops.binary("sub", p, step)


def test_one_computation_at_any_size_and_operand_order_is_one_kernel(builder, check, leaf, rng):
    from fusegrad.backends.numba_cpu import STATS
    sources = []
    for shape, swap in (((4, 6), False), ((7,), True), ((2, 3, 5), False)):
        leaves, y = _update(leaf, rng, shape, swap)
        b = builder(leaves)
        b.kernel(f"k_sgd_{'x'.join(map(str, shape))}", [y], shape)
        before = STATS.kernels_compiled + STATS.kernels_loaded + STATS.kernels_reused
        program = check(b.schedule([y]))
        assert STATS.kernels_compiled + STATS.kernels_loaded + STATS.kernels_reused == before + 1
        sources.append(program.sources[0])
    assert len({s.hash for s in sources}) == 1, [s.source for s in sources]
    assert [s.extent for s in sources] == [24, 7, 30]
    body = sources[0].source.split("for i0 in range(n):")[1].splitlines()
    stores = [k for k, line in enumerate(body) if line.lstrip().startswith("out")]
    reads = [k for k, line in enumerate(body) if "= in" in line]
    assert stores and max(reads) < min(stores)   # an output may be an input's buffer


def test_kernels_reading_off_the_loop_position_keep_their_sizes(builder, check, leaf, rng):
    x = leaf(rng.standard_normal((3, 5)).astype(np.float32))
    bias = leaf(rng.standard_normal((1, 5)).astype(np.float32))
    y = ops.binary("add", x, ops.expand(bias, (3, 5)))
    b = builder([x, bias])
    b.kernel("k_bias_3x5", [y], (3, 5))
    source = check(b.schedule([y])).sources[0]
    assert source.extent is None and "range(n)" not in source.source


def test_broadcast_loads_read_stride_zero(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((3, 5)).astype(np.float32))
    bias = leaf(rng.standard_normal((1, 5)).astype(np.float32))
    scale = leaf(np.array([2.5], np.float32))
    s = ops.expand(ops.reshape(scale, (1, 1)), (3, 5))
    y = ops.binary("mul", ops.binary("add", x, ops.expand(bias, (3, 5))), s)
    b = builder([x, bias, scale])
    b.kernel("k_bias_scale", [y], (3, 5))
    check(b.schedule([y]))


def test_permuted_sliced_and_padded_loads(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 6)).astype(np.float32))
    t = ops.permute(x, (1, 0))                                           # (6, 4)
    s = ops.slice_(t, ((1, 6, 2), (0, 4, 1)))                            # (3, 4)
    p = ops.pad(ops.slice_(x, ((0, 3, 1), (1, 5, 2))), (3, 4), ((0, 1), (1, 2)))  # (3, 4), masked
    y = ops.binary("add", s, p)
    b = builder([x])
    b.kernel("k_views", [y], (3, 4))
    program = check(b.schedule([y]))
    assert "% 2 == 0" in program.sources[0].source  # the padded dim keeps its mask


def test_copy_kernel_output_is_a_load(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((2, 3, 4)).astype(np.float64))
    y = ops.permute(x, (2, 0, 1))
    b = builder([x])
    b.kernel("k_copy", [y], y.shape)
    check(b.schedule([y]))


def test_integer_and_bool_ops(builder, leaf, check):
    a = leaf(np.array([[1, -7, 2**31 - 1], [4, 0, -3]], np.int32))
    c = leaf(np.array([[3, 5, 1], [4, -9, 2]], np.int32))
    shape = (2, 3)
    total = ops.binary("add", a, c)                       # int32 wraps like numpy
    big = ops.binary("maximum", ops.unary("neg", a), ops.binary("mul", a, c))
    lt = ops.binary("lt", a, c)
    either = ops.binary("add", lt, ops.binary("eq", a, c))  # bool add is logical or
    picked = ops.where(lt, a, ops.const(-1, shape, "int32"))
    as_float = ops.cast(total, "float32")
    as_bool = ops.cast(a, "bool")
    wide = ops.binary("pow", ops.cast(c, "int64"), ops.const(2, shape, "int64"))
    outs = [total, big, lt, either, picked, as_float, as_bool, wide]
    b = builder([a, c])
    b.kernel("k_ints", outs, shape)
    check(b.schedule(outs))


def test_float_edge_cases_follow_numpy(builder, leaf, check):
    vals = np.array([1.5, -2.0, 0.0, np.nan, np.inf, -0.5], np.float32)
    x = leaf(vals)
    y = leaf(np.array([0.0, 3.0, 0.0, 1.0, np.nan, 2.0], np.float32))
    outs = [ops.binary("div", x, y), ops.unary("log", x), ops.unary("sqrt", x),
            ops.binary("maximum", x, y), ops.binary("minimum", x, y), ops.binary("pow", x, y),
            ops.unary("recip", x), ops.binary("ne", x, x), ops.unary("abs", x),
            ops.unary("exp", ops.unary("neg", x)), ops.unary("sin", x), ops.unary("cos", x),
            ops.cast(x, "float64")]
    b = builder([x, y])
    b.kernel("k_edges", outs, (6,))
    check(b.schedule(outs))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rand_matches_interpreter(builder, leaf, check, dtype):
    keys = leaf(np.array([9, 42, 12345, 7], np.int64))
    key = ops.slice_(keys, ((1, 3, 1),))                  # (seed 42, offset 12345) through a view
    r = ops.rand(key, (3, 7), dtype)
    mask = ops.binary("lt", r, ops.const(0.5, (3, 7), dtype))
    x = leaf(np.arange(21, dtype=dtype).reshape(3, 7))
    y = ops.where(mask, x, ops.const(0, (3, 7), dtype))
    b = builder([keys, x])
    b.kernel("k_dropout", [y, r], (3, 7))
    check(b.schedule([y, r]), rtol=0, atol=0)


def test_gather(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((4, 5)).astype(np.float32))
    idx = leaf(np.array([[0, 4], [2, 2], [1, 0], [3, 1]], np.int64))
    picked = ops.gather(x, idx, 1)
    one = leaf(np.array([[4], [0], [2], [1]], np.int32))
    single = ops.gather(ops.permute(x, (1, 0)), ops.permute(one, (1, 0)), 0)  # (1, 4) from x.T
    b = builder([x, idx, one])
    b.kernel("k_gather", [ops.unary("neg", picked)], (4, 2))
    b.kernel("k_gather_one", [single], (1, 4))
    check(b.schedule([ops.unary("neg", picked), single]))


def test_parallel_kernel(builder, leaf, check, rng, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_PARALLEL_THRESHOLD", "16")
    x = leaf(rng.standard_normal((8, 9)).astype(np.float32))
    keys = leaf(np.array([3, 0], np.int64))
    y = ops.binary("mul", ops.permute(x, (1, 0)), ops.rand(keys, (9, 8), "float32"))
    b = builder([x, keys])
    b.kernel("k_parallel_scale", [y], (9, 8))
    program = check(b.schedule([y]))
    assert program.sources[0].parallel and "prange(" in program.sources[0].source


def test_scalar_kernel(builder, leaf, check):
    x = leaf(np.array(3.0, np.float32))
    y = ops.binary("mul", x, x)
    b = builder([x])
    b.kernel("k_square", [y], ())
    check(b.schedule([y]))


def test_float32_tanh_within_1e6_of_numpy(builder, leaf, check):
    grid = np.concatenate([np.linspace(-12, 12, 4001), np.geomspace(1e-8, 12, 2000),
                           -np.geomspace(1e-8, 12, 2000), [np.nan, np.inf, -np.inf, 0.0, -0.0]])
    x = leaf(grid.astype(np.float32))
    y = ops.unary("tanh", x)
    b = builder([x])
    b.kernel("k_tanh", [y], x.shape)
    program = check(b.schedule([y]), rtol=1e-6, atol=0)
    assert "_fg_tanh32(" in program.sources[0].source


def test_float64_tanh_within_2_ulp_of_numpy(builder, leaf, check):
    """The vectorising float64 tanh (``_fg_tanh64``, Cephes' two branches without jumps): within
    2 ulp of np.tanh on both sides of its switch at |x| = 0.625, and NaN, infinities, signed
    zeros and subnormals as numpy gives them."""
    sweep = np.concatenate([np.linspace(-25, 25, 200_001), np.linspace(-0.7, 0.7, 100_001),
                            np.geomspace(1e-300, 30, 20_001), -np.geomspace(1e-300, 30, 20_001)])
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.625, -0.625,
                        np.nextafter(0.625, 0), 19.1, 20.0, 20.5, 1e308, 5e-324, -5e-324])
    grid = np.concatenate([sweep, special])
    x = leaf(grid)
    y = ops.unary("tanh", x)
    b = builder([x])
    b.kernel("k_tanh64", [y], x.shape)
    program = check(b.schedule([y]), rtol=5e-16, atol=0)
    assert "_fg_tanh64(" in program.sources[0].source and "np.tanh" not in program.sources[0].source
    got, want = program.run([grid])[0], np.tanh(grid)
    finite = np.isfinite(want) & (want != 0)
    assert np.max(np.abs(got[finite] - want[finite]) / np.spacing(np.abs(want[finite]))) <= 2
    np.testing.assert_array_equal(got[-len(special):], want[-len(special):])
    assert np.signbit(got[-len(special) + 4]) and not np.signbit(got[-len(special) + 3])


def test_float32_exp_within_2e7_of_exact(builder, leaf, check, monkeypatch):
    """The vectorising float32 exp (``_fg_exp32``): within 2e-7 relative of the exact value over
    [-110, 90] where it is a normal float (numpy's float32 exp is within 2.1e-7), and NaN, infinities, signed zeros,
    overflow and underflow as numpy gives them. With denormals kept (programs flush them by
    default, ``numba_cpu/fpenv.py``), its gradual underflow is numpy's to one unit; flushed,
    a subnormal result is 0."""
    monkeypatch.setenv("FUSEGRAD_FLUSH_DENORMALS", "0")
    sweep = np.linspace(-110, 90, 400_001).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 88.8, 100.0, -103.9,
                        -104.0, -200.0, 1e-30, -1e-30, 1e-45], np.float32)
    grid = np.concatenate([sweep, special])
    x = leaf(grid)
    y = ops.unary("exp", x)
    b = builder([x])
    b.kernel("k_exp32", [y], x.shape)
    # against numpy's float32 exp (itself up to 2.1e-7 off): 3 ulp, and subnormals to one unit
    program = check(b.schedule([y]), rtol=4e-7, atol=2e-45)
    assert "_fg_exp32(" in program.sources[0].source
    got = program.run([grid])[0]
    exact = np.exp(grid.astype(np.float64))
    normal = (exact > np.finfo(np.float32).tiny) & (exact < np.finfo(np.float32).max)
    assert np.max(np.abs(got[normal] - exact[normal]) / exact[normal]) < 2e-7
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got[-len(special):], np.exp(special))
    tiny = exact <= np.finfo(np.float32).tiny                    # subnormal or zero results
    assert np.all(np.abs(got[tiny] - exact[tiny]) <= np.finfo(np.float32).smallest_subnormal)
    assert np.all(np.isinf(got[exact >= np.finfo(np.float32).max]))
    monkeypatch.delenv("FUSEGRAD_FLUSH_DENORMALS")
    flushed = compile_schedule(b.schedule([y])).run([grid])[0]
    assert np.all(flushed[tiny] == 0) and np.array_equal(flushed[~tiny], got[~tiny], equal_nan=True)


def test_a_transposing_copy_is_tiled_and_keeps_its_values(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((2, 48, 32)).astype(np.float32))
    y = ops.permute(x, (0, 2, 1))  # (2, 32, 48): the innermost loop reads with stride 32
    b = builder([x])
    k = b.kernel("k_copy_t", [y], y.shape)
    program = check(b.schedule([y]))
    src = program.sources[0].source
    assert "for i1b in range(2):" in src and "for i1t in range(16):" in src
    assert "i1 = i1b * 16 + i1t" in src
    assert "# note: tiled: loop i1 in tiles of 16 inside loop i2" in src
    # the same kernel without tiling (the CUDA renderer's nest): one loop per dim
    assert [s.var for s in walk(lower(k, False).body) if isinstance(s, Loop)] == ["i0", "i1", "i2"]


@pytest.mark.parametrize("shape,perm", [((3, 40, 24), (0, 2, 1)),    # 24 is no multiple of 16
                                        ((8, 64), (1, 0)),           # innermost loop too short
                                        ((4, 16, 32), (0, 1, 2))])   # nothing transposed
def test_copies_that_gain_nothing_from_tiles_are_not_tiled(builder, leaf, check, rng, shape,
                                                           perm):
    x = leaf(rng.standard_normal(shape).astype(np.float32))
    y = ops.binary("add", ops.permute(x, perm),
                   ops.const(1.0, tuple(shape[p] for p in perm), "float32"))
    b = builder([x])
    b.kernel("k_t", [y], y.shape)
    program = check(b.schedule([y]))
    assert "tiled" not in program.sources[0].source


def test_a_long_size_free_chain_is_rendered(builder, check, leaf, rng):
    """A chain longer than canonical.MAX_STATEMENTS keeps the lowering's order (the rewrite
    recurses along chains) and still computes the same values."""
    from fusegrad.backends.numba_cpu.canonical import MAX_STATEMENTS
    x = leaf(rng.standard_normal((6,)).astype(np.float32) * 0.1)
    y = x
    for _ in range(MAX_STATEMENTS + 10):
        y = ops.unary("neg", ops.binary("add", y, x))
    b = builder([x])
    b.kernel("k_long_6", [y], (6,))
    source = check(b.schedule([y])).sources[0]
    assert source.extent == 6 and "range(n)" in source.source


def test_a_concatenation_of_pads_runs_as_one_loop_per_part(builder, leaf, check, rng):
    """Four (3, 10) parts placed along the last axis of (3, 40) and scaled (an LSTM's gate
    gradients): the innermost loop runs as four segments, each reading its one part with a plain
    load and the others as zeros, with the values of the masked loop."""
    parts = [leaf(rng.standard_normal((3, 10)).astype(np.float32)) for _ in range(4)]
    scale = leaf(rng.standard_normal((40,)).astype(np.float32))
    y = ops.binary("mul", ops.pads_sum(parts, 1), ops.expand(ops.reshape(scale, (1, 40)), (3, 40)))
    b = builder([*parts, scale])
    b.kernel("k_gates", [y], (3, 40))
    program = check(b.schedule([y]), rtol=0, atol=0)
    source = program.sources[0].source
    assert "note: split: loop i1 runs as 4 segments [0, 10) [10, 20) [20, 30) [30, 40)" in source
    code = [line for line in source.splitlines() if not line.lstrip().startswith("#")]
    assert sum("range(10, 20)" in line for line in code) == 1
    assert not any(" if " in line for line in code), "no read is conditional any more"


def test_a_split_loop_keeps_a_reduction_in_index_order(builder, leaf, check, rng):
    """A sum over a padded row (a part of each segment is zeros): the segments add in index
    order, so the float64 row sums are the one-after-another sums bit for bit."""
    x = leaf(rng.standard_normal((5, 7)))
    padded = ops.pad(x, (5, 16), ((0, 1), (4, 1)))                     # columns 4..10 hold x
    s = ops.reduce("sum", ops.binary("mul", padded, padded), (1,))
    b = builder([x])
    b.kernel("k_padded_sum", [s], (5, 16), (1,))
    program = check(b.schedule([s]))
    assert "note: split: loop i1 runs as 3 segments [0, 4) [4, 11) [11, 16)" in program.sources[0].source
    data = x.attrs[0].data
    rows = data.reshape(5, 7)
    want = np.zeros(5)
    for j in range(7):
        want += rows[:, j] * rows[:, j]
    np.testing.assert_array_equal(program.run([data])[0], want)


def test_a_loop_of_many_parts_stays_one_loop(builder, leaf, check, rng):
    """Nine parts (a 3x3 im2col's taps along its innermost loop) would copy the body nine
    times: compile time the split does not buy back, so the loop keeps its masks."""
    parts = [leaf(rng.standard_normal((2, 1)).astype(np.float32)) for _ in range(9)]
    y = ops.pads_sum(parts, 1)
    b = builder(parts)
    b.kernel("k_taps", [y], (2, 9))
    program = check(b.schedule([y]), rtol=0, atol=0)
    assert "note: split" not in program.sources[0].source
