"""Library calls of a Schedule: numpy views over flat buffers, and the fixed scatter_add kernel.

``matmul`` goes to numpy's BLAS on strided views: a transposed load is a view with swapped
strides, which BLAS takes as is (``np.ndarray(shape, dtype, buffer, offset, strides)`` costs about
0.5 µs, ``as_strided`` about 2 µs).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...ir.view import View


def view_expr(flat: str, src_size: int, view: View, dtype: str, masked_name: str) -> str:
    """Python source of the numpy array a Load reads: ``flat`` (an array of ``src_size`` elements)
    seen through ``view``. Masked views need ``dense``, with the View bound as ``masked_name``."""
    shape = tuple(view.shape)
    if view.masks is not None:
        return f"dense({flat}, {masked_name})"
    if view.is_contiguous and math.prod(shape) == src_size:
        return f"{flat}.reshape({shape})"
    item = np.dtype(dtype).itemsize
    strides = tuple(s * item for s in view.strides)
    return f"np.ndarray({shape}, {flat}.dtype, {flat}, {view.offset * item}, {strides})"


def dense(flat: np.ndarray, view: View) -> np.ndarray:
    """A new array holding what ``view`` reads from ``flat``, zeros where its masks are invalid."""
    out = np.zeros(view.shape, flat.dtype)
    if any(m is not None and m[2] == 0 for m in (view.masks or ())):
        return out
    inner_shape, targets = [], []
    for d, n in enumerate(view.shape):
        m = view.mask(d)
        if m is None:
            inner_shape.append(n)
            targets.append(slice(None))
        else:
            start, step, count = m
            count = min(count, len(range(start, n, step)))
            inner_shape.append(count)
            targets.append(slice(start, start + count * step, step))
    item = flat.dtype.itemsize
    inner = np.ndarray(tuple(inner_shape), flat.dtype, flat, view.offset * item,
                       tuple(s * item for s in view.strides))
    out[tuple(targets)] = inner
    return out


@njit(cache=True, error_model="numpy")
def _scatter_add_3d(out, index, src):
    out[:] = 0
    for p in range(src.shape[0]):
        for k in range(src.shape[1]):
            for q in range(src.shape[2]):
                out[p, index[p, k, q], q] += src[p, k, q]


def scatter_add(out: np.ndarray, index: np.ndarray, src: np.ndarray, axis: int,
                out_shape: tuple[int, ...]) -> None:
    """Fill flat ``out`` with zeros of ``out_shape`` plus ``src[o]`` at ``o with o[axis] = index[o]``.

    Works on (before axis, axis, after axis) 3-D views so that one compiled kernel serves every
    rank; an output larger than ``src`` outside ``axis`` takes numpy's ``np.add.at``.
    """
    shape = src.shape
    if out_shape[:axis] + out_shape[axis + 1:] != shape[:axis] + shape[axis + 1:]:
        full = out.reshape(out_shape)
        full[...] = 0
        where = list(np.indices(shape, sparse=True))
        where[axis] = index
        np.add.at(full, tuple(where), src)
        return
    pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    _scatter_add_3d(out.reshape(pre, out_shape[axis], post), index.reshape(pre, shape[axis], post),
                    src.reshape(pre, shape[axis], post))
