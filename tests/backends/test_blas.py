"""blas: the products of compiled programs (MKL's gemm when the mkl package is installed)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fusegrad.backends.numba_cpu import blas
from fusegrad.backends.numba_cpu.program import LazyGemm, base_namespace
from fusegrad.ir import ops


def _elements(x: np.ndarray) -> tuple[int, ...]:
    return tuple(s // x.itemsize for s in x.strides)


@pytest.mark.parametrize("shape, strides, expected", [
    ((3, 4), (4, 1), True),        # row-major
    ((3, 4), (1, 3), True),        # its transpose
    ((3, 4), (10, 1), True),       # rows of a wider matrix
    ((3, 4), (1, 10), True),
    ((1, 4), (0, 1), True),        # a stride along an axis of size 1 is never read
    ((4, 1), (1, 0), True),
    ((3, 4), (0, 1), False),       # broadcast rows
    ((3, 4), (2, 1), False),       # overlapping rows
    ((3, 4), (8, 2), False),       # every other column
    ((3, 4), (-4, 1), False),      # flipped
    ((2, 3, 4), (12, 4, 1), False),
])
def test_blas_operand(shape, strides, expected):
    assert blas.blas_operand(shape, strides) is expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", [(3, 4, 5), (1, 4, 5), (3, 1, 5), (3, 4, 1), (1, 1, 1),
                                     (33, 70, 65)])
def test_gemm_matches_numpy_on_every_operand_layout(dtype, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    gemm = blas.gemm(dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            a, b = (a.T if ta else a), (b.T if tb else b)
            assert blas.blas_operand(a.shape, _elements(a)) and \
                blas.blas_operand(b.shape, _elements(b))
            out = np.full((m, n), np.nan, dtype)
            gemm(a, b, out)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_on_sub_blocks_and_empty_products(dtype):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((10, 20)).astype(dtype)
    a, b = big[1:4, 2:6], big[5:9, 0:5]          # leading dimension 20, not the width
    out = np.empty((3, 5), dtype)
    blas.gemm(dtype)(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)
    out = np.full((3, 5), np.nan, dtype)
    blas.gemm(dtype)(np.empty((3, 0), dtype), np.empty((0, 5), dtype), out)  # k = 0: zeros
    assert (out == 0).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_gemm_matches_numpy_with_transposes_and_broadcast_batches(dtype):
    rng = np.random.default_rng(1)
    gemm = blas.gemm(dtype, batched=True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for batch in (1, 3):
        a = rng.standard_normal((batch, 4, 5)).astype(dtype)
        bt = rng.standard_normal((batch, 6, 5)).astype(dtype).transpose(0, 2, 1)   # (b, 5, 6)
        shared = np.broadcast_to(rng.standard_normal((1, 5, 6)).astype(dtype), (batch, 5, 6))
        for b in (bt, shared):
            out = np.full((batch, 4, 6), np.nan, dtype)
            gemm(a, b, out)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=tol, atol=tol * 5)
    out = np.full((2, 3, 4), np.nan, dtype)
    gemm(np.empty((2, 3, 0), dtype), np.empty((2, 0, 4), dtype), out)
    assert (out == 0).all()


def test_lazy_gemm_puts_the_loaded_function_in_the_namespace():
    ns = base_namespace()
    assert isinstance(ns["gemm_float32"], LazyGemm)
    a = np.eye(2, dtype=np.float32)
    out = np.empty((2, 2), np.float32)
    ns["gemm_float32"](a, a + 1, out)
    np.testing.assert_array_equal(out, a + 1)
    assert ns["gemm_float32"] is blas.gemm("float32")
    assert isinstance(ns["bgemm_float64"], LazyGemm)


def test_float_products_call_gemm_and_others_numpy(builder, leaf, check, rng):
    a = leaf(rng.standard_normal((4, 3)).astype(np.float32))
    w = leaf(rng.standard_normal((5, 3)).astype(np.float32))
    x = leaf(rng.standard_normal((2, 4, 3)).astype(np.float32))
    wide = leaf(rng.standard_normal((4, 6)).astype(np.float32))
    flat = ops.matmul(a, ops.permute(w, (1, 0)))                        # W^T: a BLAS operand
    batched = ops.matmul(x, ops.expand(ops.reshape(ops.permute(w, (1, 0)), (1, 3, 5)),
                                       (2, 3, 5)))
    every_other_column = ops.slice_(wide, ((0, 4, 1), (0, 6, 2)))
    strided = ops.matmul(every_other_column, ops.permute(w, (1, 0)))
    b = builder([a, w, x, wide])
    b.extern("matmul", flat)
    b.extern("matmul", batched)
    b.extern("matmul", strided)
    program = check(b.schedule([flat, batched, strided]))
    lines = [line.lstrip() for line in program.run_source.splitlines() if "extern" in line]
    assert lines[0].startswith("gemm_float32(")
    assert lines[1].startswith("bgemm_float32(")     # an expanded (stride 0) batch of W^T
    assert lines[2].startswith("np.matmul(")


def _blas_in_subprocess(value: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("FUSEGRAD_BLAS", None)
    if value is not None:
        env["FUSEGRAD_BLAS"] = value
    return subprocess.run([sys.executable, "-c", "from fusegrad.backends.numba_cpu import blas;"
                           "print(blas.NAME)"], env=env, capture_output=True, text=True)


def test_fusegrad_blas_chooses_the_library():
    assert _blas_in_subprocess("numpy").stdout.strip() == "numpy"
    default = _blas_in_subprocess(None)
    assert default.stdout.strip() == ("mkl" if blas._mkl_path() else "numpy")
    bad = _blas_in_subprocess("atlas")
    assert bad.returncode != 0 and "FUSEGRAD_BLAS='atlas'" in bad.stderr
    if blas._mkl_path() is None:
        missing = _blas_in_subprocess("mkl")
        assert missing.returncode != 0 and "pip install 'fusegrad[mkl]'" in missing.stderr
