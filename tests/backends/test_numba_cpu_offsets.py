"""Kernels that differ only in where they read share one source: load offsets are arguments.

A load's constant flat offset is not baked into the kernel; the program passes ``buf[base:]``
(``lowering.load_base``). Masked positions must still read zero and nothing may index outside a
buffer, whatever the offset of a masked view.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad.backends.numba_cpu import STATS, cache, compile_schedule, kernel_source
from fusegrad.backends.lowering import load_base
from fusegrad.ir import ops
from fusegrad.ir.schedule import Kernel, Load, Schedule
from fusegrad.ir.view import View


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty cache folder and no kernels remembered by this process: every kernel compiles."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_LOADED", {})
    return tmp_path


def _rows(x, start, stop):
    return ops.slice_(x, ((start, stop, 1), (0, x.shape[1], 1)))


def test_time_steps_share_one_kernel(builder, leaf, check, rng, private_cache):
    """One kernel per row block of the same buffers, as an unrolled RNN makes: one compile."""
    x = leaf(rng.standard_normal((8, 6)).astype(np.float32))
    w = leaf(rng.standard_normal((8, 6)).astype(np.float32))
    b = builder([x, w])
    outs = []
    for t in range(4):
        y = ops.unary("tanh", ops.binary("mul", _rows(x, 2 * t, 2 * t + 2), _rows(w, 2 * t, 2 * t + 2)))
        b.kernel(f"k{t}_step", [y], (2, 6))
        outs.append(y)
    compiled = STATS.kernels_compiled
    program = check(b.schedule(outs))
    assert len({s.hash for s in program.sources}) == 1
    assert STATS.kernels_compiled == compiled + 1
    assert "offset" not in program.sources[0].source.split("@njit(cache=True, error")[-1]
    assert "x0_12 = x0[12:]" in program.run_source   # inputs are sliced once per run


def test_one_source_read_at_several_offsets(builder, leaf, check, rng):
    """Each distinct (buffer, offset) is an argument of its own; the code is the same for any pair."""
    x = leaf(rng.standard_normal((6, 5)).astype(np.float32))
    b = builder([x])
    y1 = ops.binary("sub", _rows(x, 0, 2), _rows(x, 3, 5))
    y2 = ops.binary("sub", _rows(x, 1, 3), _rows(x, 4, 6))
    k1 = b.kernel("k1_diff", [y1], (2, 5))
    k2 = b.kernel("k2_diff", [y2], (2, 5))
    program = check(b.schedule([y1, y2]))
    s1, s2 = program.sources
    assert s1.hash == s2.hash
    assert [base for _, base in s1.operands] == [0, 0, 15] and [base for _, base in s2.operands] == [0, 5, 20]
    assert kernel_source(k1, False).hash == kernel_source(k2, False).hash


def test_intermediate_and_output_read_at_offsets(builder, leaf, check, rng):
    """A planned buffer's slice is made once; a graph output's (a fresh array per run) each run."""
    x = leaf(rng.standard_normal((4, 8)).astype(np.float32))
    a = ops.unary("exp", x)                                    # intermediate
    c = ops.unary("neg", _rows(a, 1, 3))                       # graph output, read again below
    d = ops.binary("add", _rows(c, 1, 2), _rows(a, 3, 4))
    b = builder([x])
    b.kernel("k_exp", [a], (4, 8))
    b.kernel("k_neg", [c], (2, 8))
    b.kernel("k_add", [d], (1, 8))
    program = check(b.schedule([c, d]), runs=3)
    assert "o0_8 = o0[8:]" in program.run_source
    assert "t0_8" in program.run_source and "t0_8 =" not in program.run_source
    assert ("t0_8", "t0[8:]") in program.prebound


@pytest.mark.parametrize("start", [0, 1, 2])
def test_masked_load_at_an_offset(builder, leaf, check, rng, start):
    """pad(slice): the valid positions read from the offset on, the padding reads zeros."""
    x = leaf(rng.standard_normal((5, 6)).astype(np.float32))
    p = ops.pad(ops.slice_(x, ((start, start + 3, 1), (1, 5, 2))), (4, 5), ((1, 1), (0, 2)))
    y = ops.binary("add", p, ops.const(1.0, (4, 5), "float32"))
    b = builder([x])
    k = b.kernel("k_pad", [y], (4, 5))
    check(b.schedule([y]))
    assert load_base(next(iter(k.loads.values()))) == start * 6 + 1
    assert "% 2 == 0" in kernel_source(k, False).source


def test_masked_loads_with_no_valid_position_keep_their_offset(builder, leaf, check, rng):
    """An empty slice's offset can lie at or past the end of the buffer; padded, it reads zeros."""
    x = leaf(rng.standard_normal((2, 3)).astype(np.float32))
    empty = ops.slice_(x, ((2, 2, 1), (3, 3, 1)))               # offset 9 > 6 elements
    p = ops.pad(empty, (2, 3), ((0, 1), (0, 1)))
    q = ops.pad(ops.slice_(x, ((2, 2, 1), (0, 3, 1))), (1, 3), ((0, 1), (0, 1)))  # offset 6
    y = ops.binary("add", ops.binary("add", p, ops.expand(q, (2, 3))), x)
    b = builder([x])
    k = b.kernel("k_pad_empty", [y], (2, 3))
    check(b.schedule([y]))
    assert sorted(load_base(ld) for ld in k.loads.values()) == [0, 0, 0]


def test_reduction_over_offset_loads(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((6, 7)).astype(np.float64))
    b = builder([x])
    outs = []
    for t in range(2):
        s = _rows(x, 3 * t, 3 * t + 3)
        m = ops.reduce("max", s, (1,))
        y = ops.binary("sub", s, ops.expand(m, (3, 7)))
        total = ops.reduce("sum", ops.unary("exp", y), (1,))
        b.kernel(f"k{t}_softmax_denominator", [total, y], (3, 7), (1,))
        outs += [total, y]
    program = check(b.schedule(outs))
    assert program.sources[0].hash == program.sources[1].hash


def test_gather_and_rand_keys_at_offsets(builder, leaf, check, rng):
    x = leaf(rng.standard_normal((6, 5)).astype(np.float32))
    idx = leaf(np.array([[4], [0], [2]], np.int64))
    keys = leaf(np.array([9, 42, 12345, 7, 99, 3], np.int64))
    b = builder([x, idx, keys])
    outs = []
    for t in range(2):
        g = ops.gather(_rows(x, 3 * t, 3 * t + 3), idx, 1)
        r = ops.rand(ops.slice_(keys, ((2 * t + 1, 2 * t + 3, 1),)), (3, 1), "float32")
        y = ops.binary("mul", g, r)
        b.kernel(f"k{t}_gather_rand", [y], (3, 1))
        outs.append(y)
    program = check(b.schedule(outs), rtol=0, atol=0)
    assert program.sources[0].hash == program.sources[1].hash


def test_negative_strides_start_at_the_lowest_element(leaf):
    """Views never have negative strides today; a hand-made one still reads what it says."""
    x = leaf(np.arange(6, dtype=np.float64))
    y = ops.unary("neg", ops.slice_(x, ((0, 3, 1),)))          # stands for the loaded node
    for offset, expected in ((4, [-4, -3, -2]), (2, [-2, -1, 0])):
        view = View((3,), (-1,), offset)
        load = Load(x, view)
        assert load_base(load) == offset - 2
        k = Kernel("k_reverse", (3,), (), (y,), {y.inputs[0]: load}, (y,))
        program = compile_schedule(Schedule([k], [x], [y]))
        np.testing.assert_array_equal(program.run([x.attrs[0].data])[0], expected)


def test_commutative_operands_and_outputs_in_canonical_order(builder, leaf, check, rng):
    """mul(a, b) and mul(b, a) (and outputs listed in another order) give one source."""
    a = leaf(rng.standard_normal((3, 4)).astype(np.float32))
    c = leaf(rng.standard_normal((3, 4)).astype(np.float32))
    e = ops.unary("exp", c)
    y1, z1 = ops.binary("mul", a, e), ops.unary("neg", a)
    y2, z2 = ops.binary("mul", e, a), ops.unary("neg", a)
    b = builder([a, c])
    k1 = b.kernel("k1_mul_neg", [y1, z1], (3, 4))
    k2 = b.kernel("k2_mul_neg", [z2, y2], (3, 4))
    program = check(b.schedule([y1, z1, y2, z2]))
    assert kernel_source(k1, False).hash == kernel_source(k2, False).hash
    assert program.sources[0].hash == program.sources[1].hash


def test_float_maximum_keeps_its_operand_order(builder, leaf, check):
    """numpy's maximum(0.0, -0.0) and NaN payloads depend on the order: never swapped."""
    x = leaf(np.array([0.0, -0.0, np.nan, 1.0], np.float32))
    y = leaf(np.array([-0.0, 0.0, 2.0, np.nan], np.float32))
    outs = [ops.binary("maximum", x, y), ops.binary("maximum", y, x),
            ops.binary("minimum", x, y), ops.binary("minimum", y, x)]
    b = builder([x, y])
    b.kernel("k_max_min", outs, (4,))
    program = check(b.schedule(outs))
    got = program.run([x.attrs[0].data, y.attrs[0].data])
    for g, node in zip(got, outs):
        expected = (np.maximum if node.op == "maximum" else np.minimum)(
            node.inputs[0].attrs[0].data, node.inputs[1].attrs[0].data)
        assert np.array_equal(np.signbit(g), np.signbit(expected))


def test_unrolled_lstm_step_reuses_kernels(monkeypatch):
    """A small LSTM training step: its time steps compile to a handful of distinct kernels."""
    import fusegrad as fg
    import fusegrad.nnlib as nn
    from fusegrad.backends.numba_cpu import program as numba_program
    from fusegrad.backends.pipeline import bypass_program_cache
    from fusegrad.tracer import realize

    made = []

    def recording(kernel, parallel):
        made.append(kernel_source(kernel, parallel))
        return made[-1]

    monkeypatch.setattr(numba_program, "kernel_source", recording)
    realize.clear_program_cache()
    fg.manual_seed(0)
    model = nn.LSTM(4, 8, num_layers=2, batch_first=True)
    with bypass_program_cache():  # generate every kernel, never load the program from disk
        out, _ = model(fg.randn(3, 6, 4))
        loss = nn.functional.mse_loss(out[:, -1], fg.zeros(3, 8))
        loss.backward()
        grads = [p.grad.numpy() for p in model.parameters()]
    assert all(np.isfinite(g).all() for g in grads)
    assert len(made) >= 40                                  # 2 layers x 6 steps, forward and back
    assert len({s.hash for s in made}) <= 20
