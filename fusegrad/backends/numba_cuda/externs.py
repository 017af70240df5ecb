"""A Schedule's library calls on the GPU: matmul through cuBLAS (CuPy's ``matmul``) where CuPy is
installed, else a tiled shared-memory kernel; the copy of a strided or masked view into a dense
array, a fill and a scatter-add with atomics.

They read flat device arrays with the View's offset and strides as arguments, so a transposed
or broadcast matmul operand is read where it lies (CuPy is handed the same geometry as an
ndarray over the Numba array's memory: nothing is copied to make it). Each kernel is compiled
once per dtype. The simulator cannot run cuBLAS: there, and for integer products, and with
``FUSEGRAD_CUDA_MATMUL=tiled``, the tiled kernel runs.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any

import numpy as np

from ...errors import CodegenError
from ...ir.device import simulator_enabled
from ...ir.view import View

TILE = 16
THREADS = 256
MAX_BLOCKS = 4096
MAX_RANK = 8
SIMULATOR_BLOCKS = 2
SIMULATOR_TILE = 8
SIMULATOR_THREADS = 8

_NUMBA = {"float32": "numba.float32", "float64": "numba.float64", "int32": "numba.int64",
          "int64": "numba.int64"}

_MATMUL = '''
import numba
from numba import cuda

@cuda.jit
def matmul(a, ao, asb, asm, ask, b, bo, bsb, bsk, bsn, c, M, N, K, B):
    # one {T}x{T} output tile per block at a time; grid-stride over tiles and batches
    sa = cuda.shared.array(({T}, {T}), {ACC})
    sb = cuda.shared.array(({T}, {T}), {ACC})
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    for z in range(cuda.blockIdx.z, B, cuda.gridDim.z):
        for tr in range(cuda.blockIdx.y, (M + {T} - 1) // {T}, cuda.gridDim.y):
            for tc in range(cuda.blockIdx.x, (N + {T} - 1) // {T}, cuda.gridDim.x):
                row = tr * {T} + ty
                col = tc * {T} + tx
                acc = {ACC}(0)
                for t in range((K + {T} - 1) // {T}):
                    k = t * {T} + tx
                    if row < M and k < K:
                        sa[ty, tx] = a[ao + z * asb + row * asm + k * ask]
                    else:
                        sa[ty, tx] = 0
                    k = t * {T} + ty
                    if k < K and col < N:
                        sb[ty, tx] = b[bo + z * bsb + k * bsk + col * bsn]
                    else:
                        sb[ty, tx] = 0
                    cuda.syncthreads()
                    for j in range({T}):
                        acc += sa[ty, j] * sb[j, tx]
                    cuda.syncthreads()
                if row < M and col < N:
                    c[(z * M + row) * N + col] = acc
'''


def tile() -> int:
    """The matmul's tile side: ``TILE``, or ``SIMULATOR_TILE`` under the simulator (the same
    kernel with a smaller constant: 64 Python threads per block instead of 256)."""
    return SIMULATOR_TILE if simulator_enabled() else TILE


@lru_cache(maxsize=None)
def _matmul_kernel(dtype: str, side: int) -> Any:
    if dtype not in _NUMBA:
        raise CodegenError(f"matmul of {dtype} tensors has no CUDA kernel")
    ns: dict = {}
    exec(_MATMUL.replace("{T}", str(side)).replace("{ACC}", _NUMBA[dtype]), ns)  # noqa: S102
    return ns["matmul"]


# Module-level kernels of their own namespace: the simulator swaps a kernel's global ``cuda``
# for its per-thread fake while the kernel runs (a closure's ``cuda`` would not be swapped).
_FIXED = '''
from numba import cuda


@cuda.jit
def fill_zero(out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = 0


@cuda.jit
def copy(src, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = src[i]


@cuda.jit
def densify(src, out, offset, shape, strides, starts, steps, counts, ndim):
    # out (row-major over shape) = what the view reads; zero where a mask drops the position
    for p in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        rest = p
        at = offset
        keep = True
        for d in range(ndim - 1, -1, -1):
            q = rest % shape[d]
            rest //= shape[d]
            if steps[d] > 0:
                if q < starts[d] or (q - starts[d]) % steps[d] != 0 \\
                        or (q - starts[d]) // steps[d] >= counts[d]:
                    keep = False
                q = (q - starts[d]) // steps[d]
            at += q * strides[d]
        out[p] = src[at] if keep else 0


@cuda.jit
def scatter_add(out, index, src, src_shape, out_strides, axis, ndim, bound, err, code):
    # an index outside [0, bound) adds nothing and sets the program's error flag
    for p in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        rest = p
        at = 0
        keep = True
        for d in range(ndim - 1, -1, -1):
            q = rest % src_shape[d]
            rest //= src_shape[d]
            if d == axis:
                q = index[p]
                if q < 0 or q >= bound:
                    keep = False
            at += q * out_strides[d]
        if keep:
            cuda.atomic.add(out, at, src[p])
        else:
            err[0] = code
'''


@lru_cache(maxsize=1)
def _fixed() -> dict[str, Any]:
    ns: dict = {}
    exec(_FIXED, ns)  # noqa: S102 - the fixed kernels above
    return ns


def cap(blocks: int) -> int:
    """Blocks to launch where ``blocks`` would cover the work: every kernel loops (grid-stride)
    over what its grid does not cover, so any count is correct. The simulator runs each GPU
    thread as a Python thread: there, 2 blocks per grid dimension (and loops that iterate)."""
    return max(1, min(SIMULATOR_BLOCKS if simulator_enabled() else MAX_BLOCKS, blocks))


def threads(block: int) -> int:
    """Threads per block of a grid-stride kernel (``block``, at most ``SIMULATOR_THREADS``
    under the simulator: the kernel loops over the rest)."""
    return min(block, SIMULATOR_THREADS) if simulator_enabled() else block


def blocks(n: int) -> int:
    return cap(-(-n // THREADS))


def fill_zero(out: Any) -> None:
    _fixed()["fill_zero"][blocks(out.shape[0]), threads(THREADS)](out)


def copy(src: Any, out: Any) -> None:
    """``out[:] = src`` for flat device arrays of one size: a launch (Numba's device-to-device
    ``copy_to_device`` costs about four times as much on the host)."""
    _fixed()["copy"][blocks(out.shape[0]), threads(THREADS)](src, out)


def is_plain(view: View, src_size: int) -> bool:
    """Whether ``view`` reads its source as it lies (contiguous, whole, unmasked)."""
    return view.masks is None and view.is_contiguous and math.prod(view.shape) == src_size \
        and view.offset == 0


class ViewArgs:
    """A View's geometry as small device arrays, made once per program, for ``densify``."""

    def __init__(self, view: View, to_device: Any):
        rank = len(view.shape)
        if rank > MAX_RANK:
            raise CodegenError(f"a view of rank {rank} (more than {MAX_RANK}) has no CUDA copy")
        starts, steps, counts = [0] * rank, [0] * rank, [0] * rank
        for d in range(rank):
            m = view.mask(d) if view.masks is not None else None
            if m is not None:
                starts[d], steps[d], counts[d] = m
        self.size = math.prod(view.shape)
        self.offset = view.offset
        self.rank = rank
        self.arrays = [to_device(np.array(v or [0], np.int64))
                       for v in (list(view.shape), list(view.strides), starts, steps, counts)]

    def densify(self, src: Any, out: Any) -> None:
        if self.size:
            _fixed()["densify"][blocks(self.size), threads(THREADS)](src, out, self.offset, *self.arrays,
                                                            self.rank)


@lru_cache(maxsize=1)
def cublas() -> Any:
    """CuPy (whose ``matmul`` calls cuBLAS), or None where matmul runs the tiled kernel: CuPy not
    installed or not working, the simulator, or ``FUSEGRAD_CUDA_MATMUL=tiled``."""
    choice = os.environ.get("FUSEGRAD_CUDA_MATMUL", "auto")
    if choice not in ("auto", "cublas", "tiled"):
        raise ValueError(f"FUSEGRAD_CUDA_MATMUL={choice!r}: expected auto, cublas or tiled")
    if choice == "tiled" or simulator_enabled():
        return None
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any failure means: the tiled kernel
        if choice == "cublas":
            raise CodegenError(f"FUSEGRAD_CUDA_MATMUL=cublas, but CuPy cannot run here "
                               f"({type(exc).__name__}: {exc})") from exc
        return None
    return cupy


def matmul_path(dtype: str) -> str:
    """``cublas`` or ``tiled``: what ``matmul`` runs for a product of ``dtype``."""
    return "cublas" if dtype in ("float32", "float64") and cublas() is not None else "tiled"


def _cupy_array(cp: Any, array: Any, offset: int, shape: tuple[int, ...],
                strides: tuple[int, ...], dtype: str) -> Any:
    """A CuPy ndarray over a flat Numba device array's memory, read from element ``offset`` with
    ``strides`` in elements. Made from the pointer, not ``__cuda_array_interface__``, so CuPy
    does not synchronise with the stream Numba names there (both run on the default stream)."""
    itemsize = np.dtype(dtype).itemsize
    pointer = array.device_ctypes_pointer.value
    memory = cp.cuda.UnownedMemory(pointer, array.shape[0] * itemsize, array)
    return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(memory, offset * itemsize),
                      strides=tuple(s * itemsize for s in strides))


def matmul(a: Any, a_view: View, b: Any, b_view: View, out: Any, dtype: str) -> None:
    """``out`` (flat, contiguous ``(batch,) M x N``) = a @ b, reading a and b through unmasked
    views (2-D, or 3-D batched with any batch strides)."""
    a_sb, (M, K), (a_sm, a_sk) = _batched(a_view)
    b_sb, (_, N), (b_sk, b_sn) = _batched(b_view)
    batch = a_view.shape[0] if len(a_view.shape) == 3 else 1
    if M * N * batch == 0:
        return
    if K == 0:
        fill_zero(out)
        return
    if matmul_path(dtype) == "cublas":
        cp = cublas()
        x = _cupy_array(cp, a, a_view.offset, (batch, M, K), (a_sb, a_sm, a_sk), dtype)
        y = _cupy_array(cp, b, b_view.offset, (batch, K, N), (b_sb, b_sk, b_sn), dtype)
        cp.matmul(x, y, out=_cupy_array(cp, out, 0, (batch, M, N), (M * N, N, 1), dtype))
        return
    side = tile()
    grid = (cap(-(-N // side)), cap(-(-M // side)), cap(batch))
    _matmul_kernel(dtype, side)[grid, (side, side)](a, a_view.offset, a_sb, a_sm, a_sk, b,
                                                    b_view.offset, b_sb, b_sk, b_sn, out, M, N, K,
                                                    batch)


def _batched(view: View) -> tuple[int, tuple[int, int], tuple[int, int]]:
    shape, strides = tuple(view.shape), tuple(view.strides)
    if len(shape) == 3:
        return strides[0], shape[1:], strides[1:]
    return 0, shape, strides


def scatter_add(out: Any, index: Any, src: Any, src_shape: Any, out_strides: Any, axis: int,
                rank: int, size: int, bound: int, err: Any, code: int) -> None:
    """``out`` = zeros plus, for each position ``o`` of ``src``, ``src[o]`` added at ``o`` with
    ``o[axis] = index[o]`` (dense flat arrays; atomics make repeated indices add up). An index
    outside ``[0, bound)`` adds nothing and sets ``err[0] = code`` (the program raises)."""
    fill_zero(out)
    if size:
        _fixed()["scatter_add"][blocks(size), threads(THREADS)](
            out, index, src, src_shape, out_strides, axis, rank, bound, err, code)
