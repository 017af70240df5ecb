"""The CUDA renderer and runtime on what the op tables do not stress: rows long enough for
256-thread blocks, argmax ties and NaN across threads, scatter-add with repeated indices
(atomics), gather bounds checks, the launch shapes, and the disk cache's damaged entries."""
from __future__ import annotations

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.backends.numba_cuda import cache as cuda_cache
from fusegrad.backends.numba_cuda import render
from fusegrad.ir.passes.fuse import fuse
from fusegrad.ir.graph import Graph


def _both(fn, *arrays):
    cpu = fn(*(fg.tensor(a) for a in arrays))
    gpu = fn(*(fg.tensor(a, device="cuda") for a in arrays))
    assert gpu.is_cuda
    return gpu.cpu().numpy(), cpu.numpy()


def test_long_rows_reduce_in_256_thread_blocks():
    x = np.random.default_rng(0).standard_normal((3, 300)).astype(np.float32)
    x[1, 7] = x[1, 200] = 50.0         # a tie across threads: the first position wins
    x[2, 150] = np.nan                 # NaN wins max and argmax, as numpy's
    for fn in (lambda t: t.amax(1), lambda t: t.argmax(1), lambda t: t.argmin(1)):
        got, want = _both(fn, x)
        np.testing.assert_array_equal(got, want)
    got, want = _both(lambda t: t.sum(1), x[:2])
    np.testing.assert_allclose(got, want, rtol=1e-6)   # float64 partial sums, another order
    got, want = _both(lambda t: (t * t).sum(), x[:2])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_launch_shapes_follow_the_rows():
    def kernel_of(t):
        schedule = fuse(Graph((t.node,)))
        return render.kernel_source(schedule.kernels[0])
    short = kernel_of(fg.ones(4, 10).exp().sum(1))
    long_ = kernel_of(fg.ones(4, 500).exp().sum(1))
    flat = kernel_of(fg.ones(4, 10).exp() + 1)
    assert (short.grid, short.block) == (4, 32) and (long_.grid, long_.block) == (4, 256)
    assert "cuda.syncthreads()" in short.source and "cuda.shared.array(32" in short.source
    assert "cuda.gridsize(1)" in flat.source and "shared" not in flat.source
    # kept dims around the reduced one: both kept loops become one range of 3 * 4 blocks
    middle = kernel_of(fg.tensor(np.ones((3, 4, 50), np.float32)).permute(0, 2, 1).softmax(1))
    assert (middle.grid, middle.block) == (12, 32) and "_fg_i // 4" in middle.source


def test_kept_loops_around_a_reduction_give_every_row_a_block():
    x = np.random.default_rng(2).standard_normal((3, 70, 4)).astype(np.float32)
    for fn in (lambda t: t.amax(1), lambda t: t.softmax(1)):
        got, want = _both(fn, x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_scatter_add_with_repeated_indices_adds_them_all():
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    grads = []
    for device in ("cpu", "cuda"):
        t = fg.tensor(x, device=device).requires_grad_()
        index = fg.tensor(np.array([0, 2, 2, 2, 3]), device=device)
        (fg.index_select(t, 0, index) * fg.tensor(np.arange(15, dtype=np.float32).reshape(5, 3),
                                                  device=device)).sum().backward()
        grads.append(t.grad.cpu().numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6)
    assert grads[1][2].tolist() == [3.0 + 6.0 + 9.0, 4.0 + 7.0 + 10.0, 5.0 + 8.0 + 11.0]


def test_an_index_out_of_range_raises_index_error_on_the_gpu():
    x = fg.tensor(np.ones((3, 4), np.float32), device="cuda")
    index = fg.tensor(np.array([[0], [5], [1]]), device="cuda")
    with pytest.raises(IndexError):
        fg.take_along_dim(x, index, 1).cpu()


def test_a_damaged_cache_entry_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    x = np.arange(6, dtype=np.float32)
    schedule = fuse(Graph(((fg.tensor(x) * 3 + 1).node,)))
    ks = render.kernel_source(schedule.kernels[0])
    cuda_cache.forget_loaded()
    cuda_cache.load_kernel(ks)
    path = cuda_cache.module_dir() / f"{cuda_cache.entry_stem(ks)}.py"
    assert path.exists()
    path.write_text("def broken(:\n")
    cuda_cache.forget_loaded()
    damaged = cuda_cache.STATS.damaged
    fn = cuda_cache.load_kernel(ks)
    assert cuda_cache.STATS.damaged == damaged + 1
    assert render.cpu.code_lines(path.read_text()) == render.cpu.code_lines(ks.source)
    out = fg.tensor(x, device="cuda") * 3 + 1
    np.testing.assert_array_equal(out.cpu().numpy(), x * 3 + 1)
    assert fn is not None


def test_matmul_runs_cublas_where_cupy_is_installed(monkeypatch):
    from fusegrad.backends.numba_cuda import externs
    from fusegrad.ir.device import simulator_enabled
    if simulator_enabled():
        pytest.skip("the simulator has no cuBLAS: its matmul is the tiled kernel")
    pytest.importorskip("cupy")
    assert externs.matmul_path("float32") == "cublas" == externs.matmul_path("float64")
    assert externs.matmul_path("int64") == "tiled"
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 70, 5)).astype(np.float32)   # read transposed: (3, 5, 70)
    b = rng.standard_normal((70, 33)).astype(np.float32)     # broadcast over the batch
    want = np.matmul(a.transpose(0, 2, 1), b)

    def product():
        x = fg.tensor(a, device="cuda").permute(0, 2, 1)
        return (x @ fg.tensor(b, device="cuda")).cpu().numpy()
    got = product()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(externs, "matmul_path", lambda dtype: "tiled")
    np.testing.assert_allclose(product(), got, rtol=1e-5, atol=1e-5)


def test_inputs_sharing_memory_are_grouped():
    from types import SimpleNamespace

    from fusegrad.backends.numba_cuda.program import CudaProgram
    from fusegrad.ir.device import device_empty
    a, b = device_empty(8, "float32"), device_empty(8, "float32")
    host = np.zeros(3, np.float32)
    inputs = [b, a[4:], host, a, device_empty(0, "float32"), a[:2], b]
    fake = SimpleNamespace(_alias_memo=[None, None, ()])
    assert CudaProgram._alias_groups(fake, inputs) == (0, 1, 2, 1, 4, 1, 0)
    assert CudaProgram._alias_groups(fake, inputs) is fake._alias_memo[2]   # looked up again
