"""The matrix products of compiled programs: Intel MKL's ``cblas_?gemm`` when the optional
``mkl`` package is installed (``pip install 'fusegrad[mkl]'``), numpy's BLAS otherwise.

Why MKL: a recurrent layer's step multiplies a (32, 256) state by a (256, 768) weight, 137 such
products per GRU training step. numpy's OpenBLAS (0.3.31, SkylakeX kernels, 2 threads) takes
82 us for one, MKL 46 us (measured side by side on this project's 2-vCPU AVX-512 host); torch's
CPU build links MKL too. The products are called from a Numba function with an explicit
signature (0.5 us a call against ``np.matmul``'s 0.7 us), which reads each operand's strides: a
transposed view (a weight read as ``W.T``) is passed as ``CblasTrans`` with no copy.

``FUSEGRAD_BLAS``: ``mkl`` (fail if it is not installed), ``numpy``, or unset (MKL if it is
installed). Read once, when this module is first imported.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
from collections.abc import Callable

import numpy as np
from numba.extending import register_jitable

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@functools.lru_cache(maxsize=1)
def _mkl_path() -> str | None:
    """The path of MKL's single dynamic library (``libmkl_rt``) from the ``mkl`` package."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        name = f.name
        if name.startswith(("libmkl_rt.so", "mkl_rt")) and not name.endswith(".py"):
            path = str(f.locate())
            if os.path.exists(path):
                return path
    return None


def chosen() -> str:
    """The library compiled programs multiply with in a process started with this environment,
    ``mkl`` or ``numpy`` (nothing is loaded)."""
    choice = os.environ.get("FUSEGRAD_BLAS", "").strip().lower()
    if choice not in ("", "mkl", "numpy"):
        raise ValueError(f"FUSEGRAD_BLAS={choice!r}: expected 'mkl' or 'numpy'")
    if choice == "numpy":
        return "numpy"
    if _mkl_path() is None:
        if choice == "mkl":
            raise ImportError("FUSEGRAD_BLAS=mkl but the mkl package is not installed: "
                              "pip install 'fusegrad[mkl]'")
        return "numpy"
    return "mkl"


def _load_mkl() -> bool:
    """Load MKL if it is chosen and make its ``cblas_sgemm``/``cblas_dgemm`` symbols that
    compiled code can call (registered by name, so the functions calling them are cached on
    disk)."""
    if chosen() != "mkl":
        return False
    from llvmlite import binding
    lib = ctypes.CDLL(_mkl_path())
    for name in ("cblas_sgemm", "cblas_dgemm"):
        binding.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
    return True


NAME = "mkl" if _load_mkl() else "numpy"


def _numpy_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


@register_jitable
def _row_major(rows, cols, s0, s1):
    """Whether a (rows, cols) matrix with element strides (s0, s1) is row-major with a leading
    dimension: unit stride along its rows, rows at least a row apart (a stride along an axis of
    size 1 is never read). Its transpose is column-major when ``_row_major(cols, rows, s1, s0)``.
    """
    return (s1 == 1 or cols == 1) and (rows == 1 or s0 >= cols)


@register_jitable
def _operand(rows, cols, s0, s1):
    """(transposed, leading dimension) of an operand that ``blas_operand`` accepted."""
    if _row_major(rows, cols, s0, s1):
        return NO_TRANS, max(cols, s0 if rows > 1 else cols, 1)
    return TRANS, max(rows, s1 if cols > 1 else rows, 1)


def blas_operand(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether a 2-D view with these element strides is a BLAS operand as it is: row-major or
    column-major with a leading dimension."""
    if len(shape) != 2:
        return False
    (rows, cols), (s0, s1) = shape, strides
    if s0 < 0 or s1 < 0:
        return False
    return _row_major(rows, cols, s0, s1) or _row_major(cols, rows, s1, s0)


def _mkl_gemm(dtype: str, batched: bool) -> Callable:
    from numba import njit, types

    nb = types.float32 if dtype == "float32" else types.float64
    ndim = 3 if batched else 2
    operand = types.Array(nb, ndim, "A", readonly=True)   # takes writable arrays too
    signature = types.void(operand, operand, types.Array(nb, ndim, "C"))
    # cached on disk: the function and what it calls are module globals, not a closure's cells
    return njit(signature, cache=True, nogil=True)(_product)


def _externals() -> tuple:
    from numba import types

    i, p = types.intc, types.intp  # a pointer passed as an integer: the same register
    return tuple(
        types.ExternalFunction(name, types.void(i, i, i, i, i, i, t, p, i, p, i, t, p, i))
        for name, t in (("cblas_sgemm", types.float32), ("cblas_dgemm", types.float64)))


_cblas_sgemm, _cblas_dgemm = _externals() if NAME == "mkl" else (None, None)


@register_jitable
def _gemms(batch, m, k, n, item, pa, sa0, sa1, sa2, pb, sb0, sb1, sb2, po, so0):
    """``batch`` products of (m, k) by (k, n) matrices at pointers ``p + i * s0`` with byte
    strides ``s1, s2`` (output rows of n elements)."""
    ta, lda = _operand(m, k, sa1 // item, sa2 // item)
    tb, ldb = _operand(k, n, sb1 // item, sb2 // item)
    for i in range(batch):   # a batch stride may be 0 (an expanded operand)
        a, b, out = pa + i * sa0, pb + i * sb0, po + i * so0
        if item == 4:
            _cblas_sgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, out, max(n, 1))
        else:
            _cblas_dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, out, max(n, 1))


def _product(a, b, out):  # pragma: no cover - compiled by Numba, per dtype and rank (2 or 3)
    if out.size == 0:
        return
    if a.shape[-1] == 0:
        out[:] = 0
        return
    batched = a.ndim == 3
    _gemms(a.shape[0] if batched else 1, a.shape[-2], a.shape[-1], b.shape[-1], a.itemsize,
           a.ctypes.data, a.strides[0] if batched else 0, a.strides[-2], a.strides[-1],
           b.ctypes.data, b.strides[0] if batched else 0, b.strides[-2], b.strides[-1],
           out.ctypes.data, out.strides[0] if batched else 0)


_GEMMS: dict[tuple[str, bool], Callable] = {}


def gemm(dtype: str, batched: bool = False) -> Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                          None]:
    """``gemm(a, b, out)``: ``out[...] = a @ b`` for ``dtype`` (float32 or float64) operands,
    2-D (or 3-D with ``batched``: one product per index of the first axis, whose stride may be
    0), whose matrices ``blas_operand`` accepts, and a C-contiguous ``out``: MKL's when it is
    loaded, numpy's otherwise. Chosen when a program is bound, so a cached program runs with
    either."""
    if NAME != "mkl":
        return _numpy_matmul
    fn = _GEMMS.get((dtype, batched))
    if fn is None:
        fn = _GEMMS[(dtype, batched)] = _mkl_gemm(dtype, batched)
    return fn
