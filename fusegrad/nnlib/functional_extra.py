"""``torch.nn.functional``'s padding, resizing and similarity functions, composed from Tensor
ops: ``pad``, ``interpolate``, ``normalize``, ``cosine_similarity``.

Index patterns (reflection, nearest neighbours, interpolation taps) are computed with numpy
from the shapes and gathered, so gradients flow through the gather's scatter.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import with_location
from ..tracer import functions as F
from ..tracer import functions_ext as FX
from ..tracer.creation import buffer_tensor, tensor
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor

# how numpy.pad names each mode: the padded input is gathered with np.pad's indices
NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _raise(kind: type[Exception], op: str, message: str) -> None:
    raise kind(with_location(f"{op}: {message}", user_location()))


# ---------------------------------------------------------------------------- padding
def pad_by_index(x: Tensor, lo: tuple[int, ...], hi: tuple[int, ...], mode: str,
                 name: str) -> Tensor:
    """``x`` padded on its last dims by repeating its own elements (``numpy.pad`` modes)."""
    d = len(lo)
    for i, (a, b) in enumerate(zip(lo, hi)):
        if not a and not b:
            continue
        dim = x.ndim - d + i
        size = x.shape[dim]
        if mode == "reflect" and max(a, b) >= size:
            _raise(ValueError, name, f"padding ({a}, {b}) must be smaller than the input size "
                   f"{size} along dim {dim} for padding_mode='reflect' (input shape "
                   f"{list(x.shape)})")
        if mode == "wrap" and max(a, b) > size:
            _raise(ValueError, name, f"padding ({a}, {b}) can't be larger than the input size "
                   f"{size} along dim {dim} for padding_mode='circular' (input shape "
                   f"{list(x.shape)})")
        index = np.pad(np.arange(size), (a, b), mode=mode)
        x = F.index_select(x, dim, tensor(index))
    return x


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant",  # noqa: A002
        value: float | None = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` dims: ``pad = (last_lo, last_hi, prev_lo, prev_hi, ...)``.

    ``'constant'`` fills with ``value`` (0 by default) on any number of dims, and negative pads
    crop. ``'reflect'``, ``'replicate'`` and ``'circular'`` repeat the input's own elements
    (non-negative pads).
    """
    loc = user_location()
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        _raise(ValueError, "pad", f"padding length must be divisible by 2, got {list(pad)}")
    k = len(pad) // 2
    if k > input.ndim:
        _raise(ValueError, "pad", f"padding length {len(pad)} is too large for an input with "
               f"{input.ndim} dims (shape {list(input.shape)})")
    # pad lists the last dim first; lo/hi are in dim order
    lo = tuple(pad[2 * (k - 1 - i)] for i in range(k))
    hi = tuple(pad[2 * (k - 1 - i) + 1] for i in range(k))
    lead = input.ndim - k
    if mode != "constant":
        if mode not in NUMPY_PAD_MODE:
            _raise(NotImplementedError, "pad", f"mode {mode!r} is not supported (constant, "
                   "reflect, replicate, circular)")
        if value:
            _raise(ValueError, "pad", f"padding mode {mode!r} doesn't take in value argument")
        if min(lo + hi) < 0:
            _raise(ValueError, "pad", f"negative padding {list(pad)} is only supported in "
                   "'constant' mode")
        return pad_by_index(input, lo, hi, NUMPY_PAD_MODE[mode], "pad")
    x = input
    for i, (a, b) in enumerate(zip(lo, hi)):  # crop the negative sides first
        if a < 0 or b < 0:
            dim, size = lead + i, x.shape[lead + i]
            if max(0, -a) + max(0, -b) > size:
                _raise(ValueError, "pad", f"cropping ({a}, {b}) is more than the size {size} of "
                       f"dim {dim} (input shape {list(input.shape)})")
            x = F.slice_dim(x, dim, max(0, -a), size - max(0, -b))
    lo, hi = tuple(max(0, a) for a in lo), tuple(max(0, b) for b in hi)
    shape = tuple(x.shape[:lead]) + tuple(s + a + b for s, a, b in zip(x.shape[lead:], lo, hi))
    placement = ((0, 1),) * lead + tuple((a, 1) for a in lo)
    node = FX.pad_with(F.node_of(x), shape, placement, value or 0, loc)
    return F.wrap(node, x)


# ---------------------------------------------------------------------------- interpolate
_LINEAR_RANK = {"linear": 3, "bilinear": 4, "trilinear": 5}


def _output_sizes(x: Tensor, size: Any, scale_factor: Any) -> tuple[tuple[int, ...],
                                                                    tuple[float | None, ...]]:
    spatial = x.ndim - 2
    if (size is None) == (scale_factor is None):
        _raise(ValueError, "interpolate", "either size or scale_factor should be defined (and "
               "not both)")
    if size is not None:
        sizes = (size,) * spatial if isinstance(size, int) else tuple(size)
        if len(sizes) != spatial:
            _raise(ValueError, "interpolate", f"size {list(sizes)} must have {spatial} "
                   f"element(s) for an input of shape {list(x.shape)}")
        return tuple(int(s) for s in sizes), (None,) * spatial
    scales = (scale_factor,) * spatial if isinstance(scale_factor, (int, float)) else \
        tuple(scale_factor)
    if len(scales) != spatial:
        _raise(ValueError, "interpolate", f"scale_factor {list(scales)} must have {spatial} "
               f"element(s) for an input of shape {list(x.shape)}")
    sizes = tuple(int(math.floor(s * f)) for s, f in zip(x.shape[2:], scales))
    return sizes, tuple(float(f) for f in scales)


def _source_scale(in_size: int, out_size: int, scale: float | None, align_corners: bool,
                  dtype: type) -> Any:
    """torch's step between output positions, measured in input positions."""
    if align_corners:
        return dtype((in_size - 1) / (out_size - 1)) if out_size > 1 else dtype(0)
    return dtype(1.0 / scale) if scale is not None else dtype(in_size) / dtype(out_size)


def _nearest(x: Tensor, dim: int, out_size: int, scale: float | None, exact: bool) -> Tensor:
    in_size = x.shape[dim]
    step = _source_scale(in_size, out_size, scale, False, np.float32)
    pos = np.arange(out_size, dtype=np.float32) + np.float32(0.5 if exact else 0.0)
    index = np.minimum(np.floor(pos * step).astype(np.int64), in_size - 1)
    return F.index_select(x, dim, buffer_tensor(index))


def _linear(x: Tensor, dim: int, out_size: int, scale: float | None,
            align_corners: bool) -> Tensor:
    """Linear interpolation along one dim (bilinear/trilinear apply it to each dim in turn)."""
    in_size = x.shape[dim]
    real = np.float64 if x.dtype == "float64" else np.float32
    step = _source_scale(in_size, out_size, scale, align_corners, real)
    dst = np.arange(out_size, dtype=real)
    src = dst * step if align_corners else np.maximum(step * (dst + real(0.5)) - real(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    lam = np.clip(src - i0, 0, 1).astype(real)
    i1 = i0 + (i0 < in_size - 1)
    shape = [1] * x.ndim
    shape[dim] = out_size
    w1 = buffer_tensor(lam.reshape(shape))
    w0 = buffer_tensor((1 - lam).reshape(shape).astype(real))
    return F.index_select(x, dim, buffer_tensor(i0)) * w0 + \
        F.index_select(x, dim, buffer_tensor(i1)) * w1


def interpolate(input: Tensor, size: int | Sequence[int] | None = None,  # noqa: A002
                scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize the spatial dims of an (N, C, ...) input: ``'nearest'`` and ``'nearest-exact'``
    for any number of spatial dims, ``'linear'`` (3-D), ``'bilinear'`` (4-D) and
    ``'trilinear'`` (5-D) with or without ``align_corners``, at ``size`` or ``scale_factor``."""
    if input.ndim < 3:
        _raise(ValueError, "interpolate", f"expected an input with a batch and a channel dim "
               f"and at least one spatial dim, got shape {list(input.shape)}")
    if antialias:
        _raise(NotImplementedError, "interpolate", "antialias=True is not supported")
    nearest = mode in ("nearest", "nearest-exact")
    if not nearest and mode not in _LINEAR_RANK:
        _raise(NotImplementedError, "interpolate", f"mode {mode!r} is not supported (nearest, "
               "nearest-exact, linear, bilinear, trilinear)")
    if nearest and align_corners is not None:
        _raise(ValueError, "interpolate", "align_corners option can only be set with the "
               "interpolating modes: linear | bilinear | bicubic | trilinear")
    if not nearest and input.ndim != _LINEAR_RANK[mode]:
        _raise(NotImplementedError, "interpolate", f"got {input.ndim}D input, but {mode} mode "
               f"needs {_LINEAR_RANK[mode]}D input")
    sizes, scales = _output_sizes(input, size, scale_factor)
    if recompute_scale_factor:
        scales = (None,) * len(sizes)
    out = input
    for i, (n, s) in enumerate(zip(sizes, scales)):
        dim = 2 + i
        if nearest:
            out = _nearest(out, dim, n, s, mode == "nearest-exact")
        else:
            out = _linear(out, dim, n, s, bool(align_corners))
    return out


# ---------------------------------------------------------------------------- similarity
def normalize(input: Tensor, p: float = 2.0, dim: int = 1,  # noqa: A002
              eps: float = 1e-12) -> Tensor:
    """``input / max(norm_p(input along dim), eps)``."""
    return input / F.clamp(FX.norm(input, p, dim, keepdim=True), min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``sum(x1/|x1| * x2/|x2|)`` along ``dim`` after broadcasting, each norm raised to at
    least ``eps``. As in torch, that floor is applied without recording it, so the gradient
    is that of the unclamped norms."""
    shape = F.broadcast_shapes(x1.shape, x2.shape, op="cosine_similarity", loc=user_location())
    x1, x2 = F.expand(x1, shape), F.expand(x2, shape)

    def unit(x: Tensor) -> Tensor:
        n = FX.vector_norm(x, 2, dim, keepdim=True)
        return x / (n + (F.clamp(n, min=eps) - n).detach())

    return F.sum(unit(x1) * unit(x2), dim)
