"""float32 reductions against float64 numpy: within 1e-6 relative up to 16M elements.

float32 sums accumulate in float64 and round once (numba_cpu kernels: the serial accumulator and
the array of accumulators of "reduced axes outermost"; the interpreter: ``np.sum(dtype=float64)``).
Before, a serial float32 accumulator lost 5.5e-4 on a 16M sum and 2.2e-2 on its sum of squares.
Each size is its own kernel (bounds are literals): the numba_cpu cases compile about 30 kernels
cold; warm, the file runs in a few seconds.
"""
from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg

RTOL = 1e-6
SIZES = [1000, 1 << 16, 1 << 20, 1 << 24]

# name -> (fusegrad/numpy expression, over a 1-D float32 array of n elements)
CASES = {
    "sum": lambda x: x.sum(),
    "sum of squares": lambda x: (x * x).sum(),
    "mean": lambda x: x.mean(),
    "sum over the last axis": lambda x: x.reshape(8, -1).sum(1),
    "mean over the leading axis": lambda x: x.reshape(-1, 8).mean(0),
    "sum of squares over the leading axis": lambda x: (x * x).reshape(-1, 8).sum(0),
}


@cache
def data(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(0, 1000, n).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_float32_reductions_match_float64(backend: str, case: str, n: int) -> None:
    x = data(n)
    want = CASES[case](x.astype(np.float64))
    with using_backend(backend):
        got = CASES[case](fg.from_numpy(x)).numpy()
    assert got.dtype == np.float32
    err = np.max(np.abs(got - want) / np.abs(want))
    assert err <= RTOL, f"{case} over {n}: relative error {err:.2e}"


@pytest.mark.numba
def test_backends_agree_and_repeat_bit_for_bit() -> None:
    x = fg.from_numpy(data(1 << 20))
    runs = []
    for backend in ("numba_cpu", "numba_cpu", "interpreter"):
        with using_backend(backend):
            runs.append(np.concatenate([CASES[c](x).numpy().ravel() for c in CASES]))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], runs[2], rtol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_sums_and_max_are_exact(backend: str) -> None:
    x = np.random.default_rng(0).integers(-2**31, 2**31 - 1, 1 << 16).astype(np.int32)
    with using_backend(backend):
        t = fg.from_numpy(x)
        assert t.sum().item() == torch.from_numpy(x).sum().item()  # int32 sums to int64
        assert t.max().item() == x.max()
        assert t.argmax().item() == x.argmax()


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_norm_over_a_large_gradient(backend: str) -> None:
    g = data(1 << 22)
    with using_backend(backend):
        p = fg.nnlib.Parameter(fg.zeros(g.size))
        p.grad = fg.from_numpy(g.copy())
        total = fg.nnlib.utils.clip_grad_norm_([p], 1.0)
        clipped = np.sqrt(np.sum(p.grad.numpy().astype(np.float64) ** 2))
    want = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    assert abs(total.item() - want) / want <= RTOL
    assert abs(clipped - 1.0) <= 2e-6  # 1.0017 before; torch gives 1.000066 here
