"""The ``assign`` op: in-place updates write into the buffer a tensor keeps for its lifetime."""
import numpy as np
import pytest
from parity import using_backend

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.backends.numba_cpu.program_assigns import AssignReason
from fusegrad.backends.pipeline import compile_graph
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.errors import DTypeError, ShapeError
from fusegrad.ir.graph import Graph

BACKENDS = ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)]


def _leaf(values):
    return ops.buffer(Buffer.from_array(np.asarray(values, np.float32)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_program_reads_the_target_before_writing_it(backend):
    p, g = _leaf([1.0, 2.0]), _leaf([10.0, 20.0])
    new = ops.binary("sub", p, ops.binary("mul", g, ops.const(0.5, (2,), "float32")))
    doubled = ops.binary("mul", p, ops.const(2.0, (2,), "float32"))
    compiled = compile_graph(Graph((doubled, ops.assign(p, new), p)), backend)
    arrays = {n: n.attrs[0].data for n in (p, g)}
    target = arrays[p]
    outs = compiled.program.run([arrays[n] for n in compiled.inputs])
    np.testing.assert_array_equal(outs[0], [2.0, 4.0])        # the old value, doubled
    assert outs[1] is target                                   # written in place
    np.testing.assert_array_equal(target, [-4.0, -8.0])
    np.testing.assert_array_equal(outs[2], [1.0, 2.0])        # the old value, a copy


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_targets_swap_values(backend):
    a, b = _leaf([1.0, 2.0]), _leaf([3.0, 4.0])
    compiled = compile_graph(Graph((ops.assign(a, b), ops.assign(b, a))), backend)
    arrays = {n: n.attrs[0].data for n in (a, b)}
    compiled.program.run([arrays[n] for n in compiled.inputs])
    np.testing.assert_array_equal(arrays[a], [3.0, 4.0])
    np.testing.assert_array_equal(arrays[b], [1.0, 2.0])


def test_assign_checks_its_target_and_value():
    p = _leaf([1.0, 2.0])
    with pytest.raises(ShapeError, match="target must be a buffer leaf"):
        ops.assign(ops.unary("neg", p), p)
    with pytest.raises(ShapeError, match="does not match target shape"):
        ops.assign(p, _leaf([1.0, 2.0, 3.0]))
    with pytest.raises(DTypeError, match="dtype"):
        ops.assign(p, ops.cast(p, "float64"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_in_place_update_keeps_the_buffer_and_old_reads_see_the_old_value(backend):
    with using_backend(backend):
        p = fg.tensor([1.0, 2.0, 3.0])
        buffer = p.node.attrs[0]
        old = p * 1
        p.add_(1)
        fg.realize(old, p)
        np.testing.assert_array_equal(old.numpy(), [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(p.numpy(), [2.0, 3.0, 4.0])
        assert p.node.attrs[0] is buffer


@pytest.mark.parametrize("backend", BACKENDS)
def test_aliases_see_an_in_place_update(backend):
    with using_backend(backend):
        p = fg.tensor([1.0, 2.0, 3.0])
        view, data = p.detach(), p.data
        p.mul_(2)
        np.testing.assert_array_equal(view.numpy(), [2.0, 4.0, 6.0])  # read: realized first
        data.add_(1)
        np.testing.assert_array_equal((view + 0).numpy(), [3.0, 5.0, 7.0])
        np.testing.assert_array_equal(p.numpy(), [3.0, 5.0, 7.0])


@pytest.mark.parametrize("compiled", [False, True])
def test_parameters_state_and_running_stats_keep_their_buffers(compiled):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.Adam(model.parameters(), lr=0.01)

    def step(x, y):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = fg.compile(step) if compiled else step
    x, y = fg.randn(6, 4), fg.randint(0, 3, (6,))
    step(x, y)
    tensors = [*model.parameters(), *model.buffers(),
               *(v for s in opt.state.values() for v in s.values())]
    buffers = [t.node.attrs[0] for t in tensors]
    arrays = [b.data for b in buffers]
    before = [a.copy() for a in arrays]
    for _ in range(3):
        step(x, y)
    assert all(t.node.attrs[0] is b for t, b in zip(tensors, buffers))
    assert all(b.data is a for b, a in zip(buffers, arrays))
    assert all(not np.array_equal(a, b) for a, b in zip(arrays, before)
               if a.dtype.kind == "f")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensors_computing_the_same_value_get_buffers_of_their_own(backend):
    with using_backend(backend):
        a, b = fg.empty(3).fill_(1.0), fg.empty(3).fill_(1.0)  # one node: one program output
        fg.realize(a, b)
        a.add_(1.0)
        np.testing.assert_array_equal(a.numpy(), [2.0, 2.0, 2.0])
        np.testing.assert_array_equal(b.numpy(), [1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------- stored in place
def _run(outputs, backend, arrays=None):
    """Compile ``outputs`` on ``backend`` and run it once on its leaves' own arrays (or on
    ``arrays[leaf]``); the program and its results."""
    compiled = compile_graph(Graph(tuple(outputs)), backend)
    arrays = arrays or {}
    inputs = [arrays.get(n, n.attrs[0].data) for n in compiled.inputs]
    return compiled.program, compiled.program.run(inputs)


def _reasons(program):
    return [d.reason for d in program.assigns]


def _copies(program) -> int:
    """The ``np.copyto`` lines of the run loop taken on distinct inputs."""
    return program.run_source.split("def run_copying")[0].count("np.copyto")


def _f32(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _writer(program, item):
    return next(k for k in program.kernels if k.source.name == program.schedule.items[item].name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_elementwise_update_is_stored_straight_into_its_target(backend):
    p0, g0 = _f32((4, 5), 0), _f32((4, 5), 1)
    p, g = _leaf(p0.copy()), _leaf(g0.copy())
    lr = ops.const(0.5, (4, 5), "float32")
    program, outs = _run([ops.assign(p, ops.binary("sub", p, ops.binary("mul", lr, g)))], backend)
    target = p.attrs[0].data
    assert outs[0] is target
    np.testing.assert_array_equal(target.reshape(4, 5), p0 - np.float32(0.5) * g0)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE]
        assert _copies(program) == 0
        assert "1 of 1 stored in place" in program.describe()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4, 5), (3, 700)])
def test_an_update_dividing_per_element_reads_its_target_through_its_output(backend, shape):
    """Given the target as an input and as the output, the kernel would run its scalar loop
    (LLVM's overlap check of the two arguments fails); it takes the target once, as its
    output, and reads the old value from there (``lowering.through``)."""
    p0, g0 = _f32(shape, 7), np.abs(_f32(shape, 8)) + 1
    p, g = _leaf(p0.copy()), _leaf(g0.copy())
    target = p.attrs[0].data
    program, outs = _run([ops.assign(p, ops.binary("div", p, ops.unary("sqrt", g)))], backend)
    np.testing.assert_allclose(target.reshape(shape), p0 / np.sqrt(g0), rtol=1e-6)
    if backend == "numba_cpu":
        assert outs[0] is target
        assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE]
        assert program.assigns[0].through == (p,)
        assert _copies(program) == 0
        writer = _writer(program, program.assigns[0].writer)
        assert writer.source.function == "k_div_sqrt_n_io"
        assert [n for n, _ in writer.source.operands] == [program.assigns[0].value, g]
        assert "def k_div_sqrt_n_io(out0, in1, n):" in writer.source.source
        assert "= out0[i0]" in writer.source.source     # the old value, read where it is written


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_update_reads_its_target_through_another_leaf_on_the_same_array(backend):
    """An optimizer reads a parameter through a detached leaf over the parameter's own array;
    three updates (an Adam step's p, m, v) each written into an array read elementwise: each
    kernel reads its targets, and the detached leaf, through its outputs."""
    n = 1300
    p0, m0, v0, g0 = (_f32((n,), s) for s in (1, 2, 3, 4))
    v0 = np.abs(v0)
    p, m, v, g = (_leaf(a.copy()) for a in (p0, m0, v0, g0))
    p_read = ops.buffer(Buffer((n,), "float32", p.attrs[0].data))     # the same array
    program, _ = _run(_adam_like(p, m, v, g, p_read), backend)
    _check_adam_like(p, m, v, (p0, m0, v0, g0))
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE] * 3
        assert program.assigns[0].through == (p_read,)
        assert _copies(program) == 0
        operands = {n for k in program.kernels for n, _ in k.source.operands}
        assert not operands & {p, m, v, p_read}   # each read through an output
        assert "run_copying" in program.run_source


def _adam_like(p, m, v, g, p_read):
    n = p.size
    half = ops.const(0.5, (n,), "float32")
    m_new = ops.binary("add", ops.binary("mul", m, half), ops.binary("mul", g, half))
    v_new = ops.binary("add", ops.binary("mul", v, half),
                       ops.binary("mul", ops.binary("mul", g, g), half))
    p_new = ops.binary("sub", p_read, ops.binary("div", m_new, ops.binary(
        "add", ops.unary("sqrt", v_new), ops.const(1e-3, (n,), "float32"))))
    return [ops.assign(p, p_new), ops.assign(m, m_new), ops.assign(v, v_new)]


def _check_adam_like(p, m, v, start, read=None):
    p0, m0, v0, g0 = start
    want_m, want_v = m0 * 0.5 + g0 * 0.5, v0 * 0.5 + g0 * g0 * 0.5
    np.testing.assert_allclose(m.attrs[0].data, want_m, rtol=1e-6)
    np.testing.assert_allclose(v.attrs[0].data, want_v, rtol=1e-6)
    np.testing.assert_allclose(p.attrs[0].data, (p0 if read is None else read)
                               - want_m / (np.sqrt(want_v) + 1e-3), rtol=1e-5, atol=1e-6)


@pytest.mark.numba
def test_a_leaf_read_through_an_output_that_is_another_array_runs_the_copying_loop():
    """The plan reads the detached leaf through the parameter's output because it was the
    parameter's array when the program was compiled; a call where it is another array (other
    values) runs the copying loop, whose writer (loaded on that first call) reads it."""
    n = 40
    p0, m0, v0, g0 = (_f32((n,), s) for s in (1, 2, 3, 4))
    v0 = np.abs(v0)
    p, m, v, g = (_leaf(a.copy()) for a in (p0, m0, v0, g0))
    p_read = ops.buffer(Buffer((n,), "float32", p.attrs[0].data))
    compiled = compile_graph(Graph(tuple(_adam_like(p, m, v, g, p_read))), "numba_cpu")
    program = compiled.program
    assert [type(k).__name__ for k in (program._namespace[c.call_name]
                                        for c in program.lazy_kernels)] == ["LazyKernel"]
    other = _f32((n,), 9)
    arrays = {p_read: other.copy()}
    program.run([arrays.get(x, x.attrs[0].data) for x in compiled.inputs])
    _check_adam_like(p, m, v, (p0, m0, v0, g0), read=other)
    lazy = program._namespace[program.lazy_kernels[0].call_name]
    assert type(lazy).__name__ == "CPUDispatcher"   # loaded by its first call


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_update_dividing_by_a_broadcast_value_reads_its_target_through_its_output(backend):
    """A kernel that is not size-free (it reads a row at another position than it writes)
    reads its target through its output too."""
    p0, g0 = _f32((4, 5), 7), np.abs(_f32((1, 5), 8)) + 1
    p, g = _leaf(p0.copy()), _leaf(g0.copy())
    row = ops.expand(ops.unary("sqrt", g), (4, 5))
    program, _ = _run([ops.assign(p, ops.binary("div", p, row))], backend)
    np.testing.assert_allclose(p.attrs[0].data.reshape(4, 5), p0 / np.sqrt(g0), rtol=1e-6)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE]
        assert _copies(program) == 0
        assert _writer(program, program.assigns[0].writer).source.function.endswith("_io")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transposed_read_of_the_target_forces_the_copy(backend):
    p0 = _f32((6, 6), 2)
    p = _leaf(p0.copy())
    new = ops.binary("add", p, ops.permute(p, (1, 0)))
    program, _ = _run([ops.assign(p, new)], backend)
    np.testing.assert_array_equal(p.attrs[0].data.reshape(6, 6), p0 + p0.T)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.WRITER_READS_TARGET_ELSEWHERE]
        assert _copies(program) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_of_the_target_after_its_new_value_is_computed_forces_the_copy(backend):
    p0 = _f32((5, 5), 3)
    p = _leaf(p0.copy())
    doubled = ops.binary("mul", p, ops.const(2.0, (5, 5), "float32"))
    product = ops.matmul(doubled, p)           # reads the new value and the old target
    program, outs = _run([product, ops.assign(p, doubled)], backend)
    np.testing.assert_allclose(outs[0].reshape(5, 5), (2 * p0) @ p0, rtol=1e-5)
    np.testing.assert_array_equal(p.attrs[0].data.reshape(5, 5), 2 * p0)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.TARGET_READ_LATER]
        assert "read by item" in program.describe()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_target_that_is_also_a_result_keeps_its_old_value_there(backend):
    p0 = _f32((3,), 4)
    p = _leaf(p0.copy())
    program, outs = _run([ops.assign(p, ops.unary("neg", p)), p], backend)
    np.testing.assert_array_equal(outs[1], p0)
    np.testing.assert_array_equal(p.attrs[0].data, -p0)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.TARGET_READ_AT_END]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_leaf_read_later_over_the_target_s_memory_runs_the_copying_loop(backend):
    """A second leaf of the target's size and dtype, read after the value is written, is taken
    to be another array (two parameters of one shape): the write goes in place. A call that
    passes the target's own array for it (a ``detach()`` read late) runs the copying loop."""
    p0 = _f32((5, 5), 5)
    p, v = _leaf(p0.copy()), _leaf(p0.copy())
    doubled = ops.binary("mul", p, ops.const(2.0, (5, 5), "float32"))
    outputs = [ops.matmul(doubled, v), ops.assign(p, doubled)]
    program, _ = _run(outputs, backend)
    shared = p0.reshape(-1).copy()
    outs = program.run([shared for _ in program.inputs])     # v is p's own array
    np.testing.assert_allclose(outs[0].reshape(5, 5), (2 * p0) @ p0, rtol=1e-5)
    np.testing.assert_array_equal(shared.reshape(5, 5), 2 * p0)
    if backend == "numba_cpu":
        assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE]
        assert program.run_source.count("np.copyto") == 1    # in the copying loop only
        target, other = p0.reshape(-1).copy(), p0.reshape(-1).copy()
        arrays = {p: target, v: other}
        outs = program.run([arrays[n] for n in program.inputs])
        np.testing.assert_allclose(outs[0].reshape(5, 5), (2 * p0) @ p0, rtol=1e-5)
        assert outs[1] is target
        np.testing.assert_array_equal(target.reshape(5, 5), 2 * p0)


@pytest.mark.numba
def test_inputs_sharing_memory_otherwise_run_the_copying_loop():
    """A leaf of another size over part of the target's memory, read after the in-place kernel:
    the plan cannot see it, so the run checks and copies instead."""
    p0 = _f32((5, 5), 6)
    p, row = _leaf(p0.copy()), _leaf(p0[0].copy())
    doubled = ops.binary("mul", p, ops.const(2.0, (5, 5), "float32"))
    outputs = [ops.matmul(doubled, ops.reshape(row, (5, 1))), ops.assign(p, doubled)]
    program, _ = _run(outputs, "numba_cpu")
    assert _reasons(program) == [AssignReason.UPDATED_IN_PLACE]
    shared = p0.reshape(-1).copy()
    arrays = {p: shared, row: shared[:5]}
    outs = program.run([arrays[n] for n in program.inputs])
    np.testing.assert_allclose(outs[0].reshape(5, 1), (2 * p0) @ p0[0].reshape(5, 1), rtol=1e-5)
    assert outs[1] is shared
    np.testing.assert_array_equal(shared.reshape(5, 5), 2 * p0)


@pytest.mark.numba
def test_the_sharing_check_answers_anew_when_the_arrays_change():
    """The check keeps its last answer for the same arrays (a training step passes the same
    ones every call); other arrays, sharing memory or not, are checked again."""
    p0 = _f32((5, 5), 7)
    p, row = _leaf(p0.copy()), _leaf(p0[0].copy())
    doubled = ops.binary("mul", p, ops.const(2.0, (5, 5), "float32"))
    outputs = [ops.matmul(doubled, ops.reshape(row, (5, 1))), ops.assign(p, doubled)]
    program, _ = _run(outputs, "numba_cpu")
    expected = (2 * p0) @ p0[0].reshape(5, 1)
    for _ in range(2):
        apart = {p: p0.reshape(-1).copy(), row: p0[0].copy()}
        outs = program.run([apart[n] for n in program.inputs])
        np.testing.assert_allclose(outs[0].reshape(5, 1), expected, rtol=1e-5)
        shared = p0.reshape(-1).copy()
        arrays = {p: shared, row: shared[:5]}
        inputs = [arrays[n] for n in program.inputs]
        for scale in (1, 2):  # the second run, on the same arrays, uses the kept answer
            outs = program.run(inputs)
            np.testing.assert_allclose(outs[0].reshape(5, 1), scale * scale * expected,
                                       rtol=1e-5)
            np.testing.assert_array_equal(shared.reshape(5, 5), 2 ** scale * p0)
    inputs = [apart[n] for n in program.inputs]
    memo = program._namespace["share_memo"]
    program.run(inputs)
    assert memo[0] == [id(a) for a in inputs] and memo[2] is False


@pytest.mark.numba
def test_a_leaf_read_later_over_the_target_through_as_strided_runs_the_copying_loop():
    """Memory is owned at the end of the chain of ``base``s: an ``as_strided`` view's base is a
    stand-in object whose own base is the array, and the run check follows it there."""
    n = 700
    p0, g0 = _f32((n,), 3), np.abs(_f32((n,), 4)) + 1
    p, g, q = _leaf(p0.copy()), _leaf(g0.copy()), _leaf(p0.copy())
    value = ops.binary("mul", q, ops.unary("neg", g))
    dot = ops.matmul(ops.reshape(value, (1, n)), ops.reshape(q, (n, 1)))
    program, _ = _run([ops.assign(p, value), dot], "numba_cpu")
    assert _reasons(program) == [AssignReason.STORED_IN_PLACE]
    target = p0.copy()
    view = np.lib.stride_tricks.as_strided(target, (n,), (4,))
    outs = program.run([{p: target, q: view, g: g0}[x] for x in program.inputs])
    np.testing.assert_allclose(float(outs[1].reshape(())), float((-p0 * g0 * p0).sum()),
                               rtol=1e-4)
    np.testing.assert_allclose(target, -p0 * g0, rtol=1e-6)
