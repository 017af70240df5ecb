"""Convolution and pooling (``torch.nn.functional`` semantics), composed from Tensor ops.

There is no conv or pool primitive in the IR: everything here is strided slices, zero padding,
sums, ``argmax``/``where`` and ``matmul``, so autodiff gives the backward pass and the fuser turns
both passes into a few kernels.

The shared piece is :func:`sliding_windows` (im2col, built as IR nodes in
``tracer/windows.py``): every window of the input laid out along a new axis, built as one fused
kernel that reads the unpadded input through index arithmetic (padding is masked, never
written). On top of it:

- convolution: the weight reshaped to (O, C*K) times the windows laid out (C*K, N*positions):
  one GEMM (per group), whose rows of positions move into NCHW as the next kernel reads them.
  Backward: two GEMMs and one col2im kernel that sums the windows' gradient back onto the
  input;
- max pooling: ``argmax`` over the window axis picks the first maximum in row-major order and
  only that element takes the gradient, as in torch (``amax`` would split the gradient between
  tied elements, such as the zeros after a ReLU); padding reads as -inf;
- average pooling: the window sum divided by the window size (torch's divisor rules);
- adaptive average pooling: average pooling when the sizes divide, else one averaging matrix
  per spatial dim (windows of varying size).

Pooling windows that tile the input (stride = kernel, no padding or dilation: ``MaxPool2d(2)``)
are a reshape of the input instead, read as plain strided memory (one copy kernel for max
pooling's window axis, none for average pooling); each input element is then in one window, so
the backward pass needs no col2im sum either.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np

from ..errors import ShapeError, with_location
from ..tracer import functions as F
from ..tracer.creation import buffer_tensor
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor
from ..tracer.windows import sliding_windows

IntOrTuple = int | Sequence[int]

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d",
           "avg_pool2d", "avg_pool3d", "conv1d", "conv2d", "conv3d", "conv_output_size",
           "max_pool1d", "max_pool2d", "max_pool3d", "sliding_windows", "unfold"]


# ----------------------------------------------------------------------------- arguments
def ntuple(value: Any, n: int, what: str, op: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``n`` ints (an int is repeated), or a ValueError naming ``op``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and \
            all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and n > 1:
        return ntuple(value[0], n, what, op)
    raise ValueError(with_location(
        f"{op}: {what} must be an int or a tuple of {n} ints, got {value!r}", user_location()))


def _fail(msg: str, kind: type = ShapeError) -> None:
    raise kind(with_location(msg, user_location()))


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int,
                     pad_hi: int, ceil_mode: bool = False) -> int:
    """Output length of a sliding window (PyTorch's formula, ``ceil_mode`` included)."""
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # the last window must start inside the input or the left padding
    return out - 1 if (out - 1) * stride >= size + pad_lo else out


def _check_rank(x: Tensor, d: int, op: str) -> bool:
    """Whether ``x`` is batched; raises for a rank other than ``d + 1`` or ``d + 2``."""
    if x.ndim not in (d + 1, d + 2):
        _fail(f"{op}: expected a {d + 1}-D (unbatched) or {d + 2}-D (batched) input, got "
              f"{x.ndim}-D input of shape {list(x.shape)}")
    return x.ndim == d + 2


def _outside_taps(spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...], pad: tuple[int, ...], out: tuple[int, ...]
                  ) -> np.ndarray:
    """(*out, K) bools: which window taps read outside the input (padding or past the end)."""
    per_dim = []
    for size, k, s, dl, p, o in zip(spatial, kernel, stride, dilation, pad, out):
        index = np.arange(o)[:, None] * s + np.arange(k)[None, :] * dl - p
        per_dim.append((index < 0) | (index >= size))
    d = len(kernel)
    outside = np.zeros(out + kernel, dtype=bool)
    for i, m in enumerate(per_dim):  # (out_i, k_i) placed at dims i and d + i
        shape = [1] * (2 * d)
        shape[i], shape[d + i] = m.shape
        outside |= m.reshape(shape)
    return outside.reshape(out + (math.prod(kernel),))


# ----------------------------------------------------------------------------- convolution
def _conv_padding(padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...], op: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(leading, trailing) padding per spatial dim from an int, a tuple, 'valid' or 'same'."""
    d = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * d, (0,) * d
        if padding != "same":
            _fail(f"{op}: invalid padding string {padding!r}, should be one of "
                  "{'valid', 'same'}", ValueError)
        if any(s != 1 for s in stride):
            _fail(f"{op}: padding='same' is not supported for strided convolutions "
                  f"(stride={stride})", ValueError)
        total = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
        lo = tuple(t // 2 for t in total)  # torch puts the odd element at the end
        return lo, tuple(t - a for t, a in zip(total, lo))
    pad = ntuple(padding, d, "padding", op)
    if any(p < 0 for p in pad):
        _fail(f"{op}: negative padding is not supported, got {pad}", ValueError)
    return pad, pad


def convolution(x: Tensor, weight: Tensor, bias: Tensor | None, stride: IntOrTuple,
                padding: Any, dilation: IntOrTuple, groups: int, op: str) -> Tensor:
    """N-d convolution (cross-correlation, as torch) of ``x`` (N, C, *S) or (C, *S).

    ``op`` names the caller in error messages (``conv2d`` or a layer such as ``Conv2d``).
    """
    d = weight.ndim - 2
    batched = _check_rank(x, d, op)
    F.check_same_dtype(op, (("input", x), ("weight", weight), ("bias", bias)), user_location(),
                       F.MODEL_DTYPE_HINT)
    if not batched:
        x = F.unsqueeze(x, 0)
    kernel = tuple(weight.shape[2:])
    stride_t = ntuple(stride, d, "stride", op)
    dilation_t = ntuple(dilation, d, "dilation", op)
    if any(s <= 0 for s in stride_t) or any(v <= 0 for v in dilation_t):
        _fail(f"{op}: stride and dilation must be positive, got stride={stride_t}, "
              f"dilation={dilation_t}", ValueError)
    lo, hi = _conv_padding(padding, kernel, stride_t, dilation_t, op)
    c, spatial = x.shape[1], tuple(x.shape[2:])
    out_ch, group_ch = weight.shape[0], weight.shape[1]
    if groups <= 0 or out_ch % groups:
        _fail(f"{op}: out_channels ({out_ch}) must be divisible by groups ({groups})", ValueError)
    if c != group_ch * groups:
        shape = list(x.shape if batched else x.shape[1:])
        _fail(f"{op} expected input with {group_ch * groups} channels, got {c} (input shape "
              f"{shape}, weight shape {list(weight.shape)}, groups={groups})")
    padded = tuple(s + a + b for s, a, b in zip(spatial, lo, hi))
    effective = tuple(dl * (k - 1) + 1 for k, dl in zip(kernel, dilation_t))
    if any(e > p for e, p in zip(effective, padded)):
        _fail(f"{op}: kernel size {_dims(effective)} (dilated) can't be greater than the padded "
              f"input size {_dims(padded)} (input shape {list(x.shape)})")
    out = tuple(conv_output_size(s, k, st, dl, a, b) for s, k, st, dl, a, b in
                zip(spatial, kernel, stride_t, dilation_t, lo, hi))
    result = _conv_gemm(x, weight, groups, kernel, stride_t, dilation_t, lo, out)
    if bias is not None:
        if tuple(bias.shape) != (out_ch,):
            _fail(f"{op}: bias of shape {list(bias.shape)} does not match {out_ch} output "
                  "channels")
        result = result + F.reshape(bias, (out_ch,) + (1,) * d)
    return result if batched else F.squeeze(result, 0)


def _dims(sizes: Sequence[int]) -> str:
    return "(" + " x ".join(map(str, sizes)) + ")"


def _conv_gemm(x: Tensor, weight: Tensor, groups: int, kernel: tuple[int, ...],
               stride: tuple[int, ...], dilation: tuple[int, ...], lo: tuple[int, ...],
               out: tuple[int, ...]) -> Tensor:
    """im2col and one matrix product (per group); the result is (N, O, *out).

    The windows are laid out (G, Cg*K, N, positions): channels and taps first, as torch's
    ``unfold`` but with the batch inside, so the weight (G, Og, Cg*K) times them is one GEMM
    per group over all N*positions columns, and the product (G, Og, N, positions) reaches NCHW
    by moving whole rows of positions, which the kernel reading it does as it reads (the
    gradient's GEMMs take the output gradient in that order, written so by the kernel that
    makes it). Per-sample GEMMs (N, Cg*K, positions) cost cnn 2.5 ms more (the weight's
    gradient was N small products and a sum); the channels-last GEMM before them needed
    transposing copies of the output and its gradient.
    """
    n, c = x.shape[0], x.shape[1]
    out_ch, positions, taps = weight.shape[0], math.prod(out), math.prod(kernel)
    cg, og, d = c // groups, out_ch // groups, len(kernel)
    xg = F.reshape(F.transpose(x, 0, 1), (groups, cg, 1, n) + tuple(x.shape[2:]))
    cols = sliding_windows(xg, 4, kernel, stride, dilation, lo, out, 2)
    cols = F.reshape(cols, (groups, cg * taps, n * positions))
    w = F.reshape(weight, (groups, og, cg * taps))
    y = F.reshape(F.matmul(w, cols), (groups, og, n, *out))
    return F.reshape(F.permute(y, (2, 0, 1, *range(3, 3 + d))), (n, out_ch, *out))


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1) -> Tensor:
    """1-D convolution of ``input`` (N, C, L) with ``weight`` (O, C/groups, K).

    Args:
        stride, dilation: an int or a 1-tuple.
        padding: an int, a 1-tuple, ``'valid'`` (none) or ``'same'`` (output length = input
            length; stride 1 only).
        groups: split the channels into this many independent convolutions.
    """
    _check_weight(weight, 1, "conv1d")
    return convolution(input, weight, bias, stride, padding, dilation, groups, "conv1d")


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1) -> Tensor:
    """2-D convolution of ``input`` (N, C, H, W) with ``weight`` (O, C/groups, KH, KW).

    Args:
        stride, dilation: an int or an (h, w) tuple.
        padding: an int, an (h, w) tuple, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: split the channels into this many independent convolutions.
    """
    _check_weight(weight, 2, "conv2d")
    return convolution(input, weight, bias, stride, padding, dilation, groups, "conv2d")


def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1) -> Tensor:
    """3-D convolution of ``input`` (N, C, D, H, W) with ``weight`` (O, C/groups, KD, KH, KW).

    Args:
        stride, dilation: an int or a (d, h, w) tuple.
        padding: an int, a (d, h, w) tuple, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: split the channels into this many independent convolutions.
    """
    _check_weight(weight, 3, "conv3d")
    return convolution(input, weight, bias, stride, padding, dilation, groups, "conv3d")


def _check_weight(weight: Tensor, d: int, op: str) -> None:
    if weight.ndim != d + 2:
        _fail(f"{op}: expected a {d + 2}-D weight (out_channels, in_channels/groups, kernel...), "
              f"got shape {list(weight.shape)}")


def unfold(input: Tensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
           padding: IntOrTuple = 0, stride: IntOrTuple = 1) -> Tensor:
    """Sliding local blocks of a 4-D ``input`` (N, C, H, W) as (N, C*KH*KW, L), like torch.

    Args:
        kernel_size, dilation, padding, stride: an int or an (h, w) tuple each.
    """
    op = "unfold"
    if input.ndim != 4:
        _fail(f"{op}: expected a 4-D input (N, C, H, W), got shape {list(input.shape)}")
    kernel = ntuple(kernel_size, 2, "kernel_size", op)
    dil, pad = ntuple(dilation, 2, "dilation", op), ntuple(padding, 2, "padding", op)
    st = ntuple(stride, 2, "stride", op)
    n, c, h, w = input.shape
    out = tuple(conv_output_size(s, k, a, b, p, p) for s, k, a, b, p in
                zip((h, w), kernel, st, dil, pad))
    if any(o <= 0 for o in out):
        _fail(f"{op}: the {kernel} kernel does not fit the padded input of shape "
              f"{list(input.shape)} (padding {pad}, dilation {dil})")
    xu = F.unsqueeze(input, 2)  # (N, C, 1, H, W): the windows are laid out along dim 2
    cols = sliding_windows(xu, 3, kernel, st, dil, pad, out, 2)
    return F.reshape(cols, (n, c * kernel[0] * kernel[1], out[0] * out[1]))


# ----------------------------------------------------------------------------- pooling
def _pool_args(x: Tensor, d: int, kernel_size: IntOrTuple, stride: IntOrTuple | None,
               padding: IntOrTuple, dilation: IntOrTuple, ceil_mode: bool, op: str
               ) -> tuple[tuple[int, ...], ...]:
    """(kernel, stride, padding, dilation, output size), checked as torch checks them."""
    _check_rank(x, d, op)
    kernel = ntuple(kernel_size, d, "kernel_size", op)
    st = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) else \
        ntuple(stride, d, "stride", op)
    pad, dil = ntuple(padding, d, "padding", op), ntuple(dilation, d, "dilation", op)
    if any(v <= 0 for v in kernel + st + dil):
        _fail(f"{op}: kernel_size, stride and dilation must be positive, got kernel_size="
              f"{kernel}, stride={st}, dilation={dil}", ValueError)
    if any(p < 0 or p > k // 2 for p, k in zip(pad, kernel)):
        _fail(f"{op}: pad should be at most half of the kernel size, but got padding={pad} "
              f"for kernel_size={kernel}", ValueError)
    spatial = tuple(x.shape[-d:])
    out = tuple(conv_output_size(s, k, a, b, p, p, ceil_mode) for s, k, a, b, p in
                zip(spatial, kernel, st, dil, pad))
    if any(o <= 0 for o in out):
        _fail(f"{op}: output size {_dims(out)} is too small for input shape {list(x.shape)} "
              f"(kernel_size={kernel}, stride={st}, padding={pad}, dilation={dil})")
    return kernel, st, pad, dil, out


def _tiles(kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...],
           dilation: tuple[int, ...], out: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
    """Whether the windows tile the input without overlap or padding (``MaxPool2d(2)``)."""
    return kernel == stride and not any(pad) and all(v == 1 for v in dilation) and \
        all(o * k <= s for o, k, s in zip(out, kernel, spatial))


def _blocks(x: Tensor, d: int, kernel: tuple[int, ...], out: tuple[int, ...]) -> Tensor:
    """Non-overlapping windows as a view: the last ``d`` dims of ``x`` (cut to ``out * kernel``)
    split into (o1, k1, ..., od, kd), so pooling reads plain strided memory."""
    lead = x.ndim - d
    for i, (o, k) in enumerate(zip(out, kernel)):
        if x.shape[lead + i] != o * k:  # the rows no window reaches (ceil_mode off)
            x = F.slice_dim(x, lead + i, 0, o * k)
    sizes = tuple(v for o, k in zip(out, kernel) for v in (o, k))
    return F.reshape(x, (*x.shape[:lead], *sizes))


def max_pool(x: Tensor, d: int, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
             padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
             return_indices: bool = False, op: str = "max_pool") -> Any:
    """N-d max pooling over the last ``d`` dims; see :func:`max_pool2d`."""
    kernel, st, pad, dil, out = _pool_args(x, d, kernel_size, stride, padding, dilation,
                                           ceil_mode, op)
    spatial, taps = tuple(x.shape[-d:]), math.prod(kernel)
    if _tiles(kernel, st, pad, dil, out, spatial):
        blocks = _blocks(x, d, kernel, out)  # (..., o1, k1, ..., od, kd)
        lead = x.ndim - d
        order = (*range(lead), *range(lead, lead + 2 * d, 2), *range(lead + 1, lead + 2 * d, 2))
        windows = F.reshape(F.permute(blocks, order), (*x.shape[:lead], *out, taps))
    else:
        windows = sliding_windows(F.unsqueeze(x, -1), x.ndim - d, kernel, st, dil, pad, out,
                                  x.ndim)
        outside = _outside_taps(spatial, kernel, st, dil, pad, out)
        if outside.any():  # padding is -inf: it never wins, and an input -inf still can
            windows = windows + buffer_tensor(np.where(outside, -np.inf, 0.0).astype(x.dtype.name))
    # the first maximum of each window (in row-major order) takes the whole gradient, as in
    # torch; amax would split it between tied elements (zeros after a ReLU)
    first_max = F.eq(F.argmax(windows, -1, keepdim=True),
                     buffer_tensor(np.arange(taps, dtype=np.int64)))
    values = F.sum(F.where(first_max, windows, 0.0), -1)
    if not return_indices:
        return values
    index = buffer_tensor(_tap_indices(spatial, kernel, st, dil, pad, out))
    return values, F.sum(F.where(first_max, index, 0), -1)


def _tap_indices(spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                 dilation: tuple[int, ...], pad: tuple[int, ...], out: tuple[int, ...]
                 ) -> np.ndarray:
    """(*out, K) int64: the flat index in the input plane that each window tap reads."""
    d = len(kernel)
    coords = []
    for i, (k, s, dl, p, o) in enumerate(zip(kernel, stride, dilation, pad, out)):
        index = np.arange(o)[:, None] * s + np.arange(k)[None, :] * dl - p
        shape = [1] * (2 * d)
        shape[i], shape[d + i] = index.shape
        coords.append(np.broadcast_to(index.reshape(shape), out + kernel))
    flat = np.ravel_multi_index(coords, spatial, mode="clip")
    return flat.reshape(out + (math.prod(kernel),)).astype(np.int64)


def max_pool1d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """1-D max pooling of ``input`` (N, C, L) or (C, L); see :func:`max_pool2d`."""
    return max_pool(input, 1, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    "max_pool1d")


def max_pool2d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """2-D max pooling of ``input`` (N, C, H, W) or (C, H, W), as torch.

    The gradient of each output goes to the first maximum of its window (row-major order),
    so tied inputs (zeros after a ReLU) get the same gradients as in torch.

    Args:
        kernel_size: the window, an int or (h, w).
        stride: the step, default ``kernel_size``.
        padding: implicit -inf padding on both sides, at most half the kernel.
        dilation: the spacing of window elements.
        ceil_mode: round the output size up (a last, partial window).
        return_indices: also return each maximum's flat index in its input plane (int64).
    """
    return max_pool(input, 2, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    "max_pool2d")


def max_pool3d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """3-D max pooling of ``input`` (N, C, D, H, W) or (C, D, H, W); see :func:`max_pool2d`."""
    return max_pool(input, 3, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                    "max_pool3d")


def avg_pool(x: Tensor, d: int, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
             padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None, op: str = "avg_pool") -> Tensor:
    """N-d average pooling over the last ``d`` dims; see :func:`avg_pool2d`."""
    kernel, st, pad, dil, out = _pool_args(x, d, kernel_size, stride, padding, 1, ceil_mode,
                                           op)
    if _tiles(kernel, st, pad, dil, out, tuple(x.shape[-d:])):
        lead = x.ndim - d
        total = F.sum(_blocks(x, d, kernel, out), tuple(range(lead + 1, lead + 2 * d, 2)))
    else:
        windows = sliding_windows(F.unsqueeze(x, -1), x.ndim - d, kernel, st, dil, pad, out,
                                  x.ndim)
        total = F.sum(windows, -1)
    if divisor_override is not None:
        if divisor_override == 0:
            _fail(f"{op}: divisor must be non-zero", ValueError)
        return total / divisor_override
    counts = _window_counts(tuple(x.shape[-d:]), kernel, st, pad, out, count_include_pad)
    if np.all(counts == counts.flat[0]):
        return total / int(counts.flat[0])
    return total / buffer_tensor(counts.astype(x.dtype.name))


def _window_counts(spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                   pad: tuple[int, ...], out: tuple[int, ...], include_pad: bool) -> np.ndarray:
    """The divisor of each output: the window's size clipped to the padded input (torch), or
    to the input alone when padding does not count."""
    per_dim = []
    for size, k, s, p, o in zip(spatial, kernel, stride, pad, out):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if not include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        per_dim.append(end - start)
    return reduce(np.multiply.outer, per_dim)


def avg_pool1d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """1-D average pooling of ``input`` (N, C, L) or (C, L); see :func:`avg_pool2d`."""
    return avg_pool(input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None,
                    "avg_pool1d")


def avg_pool2d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """2-D average pooling of ``input`` (N, C, H, W) or (C, H, W), as torch.

    Args:
        kernel_size: the window, an int or (h, w).
        stride: the step, default ``kernel_size``.
        padding: implicit zero padding on both sides, at most half the kernel.
        ceil_mode: round the output size up (a last, partial window).
        count_include_pad: divide by the window size including padding (else by the number
            of input elements in the window).
        divisor_override: divide by this instead.
    """
    return avg_pool(input, 2, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override, "avg_pool2d")


def avg_pool3d(input: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """3-D average pooling of ``input`` (N, C, D, H, W) or (C, D, H, W); see :func:`avg_pool2d`."""
    return avg_pool(input, 3, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override, "avg_pool3d")


def adaptive_avg_pool(x: Tensor, d: int, output_size: Any, op: str = "adaptive_avg_pool"
                      ) -> Tensor:
    """N-d adaptive average pooling over the last ``d`` dims; see :func:`adaptive_avg_pool2d`."""
    _check_rank(x, d, op)
    spatial = tuple(x.shape[-d:])
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size,) * d
    if not isinstance(output_size, (tuple, list)) or len(output_size) != d:
        _fail(f"{op}: output_size must be an int, None or a tuple of {d}, got {output_size!r}",
              ValueError)
    out = tuple(s if o is None else int(o) for o, s in zip(output_size, spatial))
    if any(o <= 0 for o in out):
        _fail(f"{op}: output_size must be positive, got {out}", ValueError)
    if any(s == 0 for s in spatial):
        _fail(f"{op}: expected non-empty spatial dims, got input shape {list(x.shape)}")
    if all(s % o == 0 for s, o in zip(spatial, out)):
        kernel = tuple(s // o for s, o in zip(spatial, out))
        return avg_pool(x, d, kernel, kernel, 0, op=op)
    # windows of varying size: average along one dim at a time with a (in, out) matrix
    for i, (size, o) in enumerate(zip(spatial, out)):
        if size == o:
            continue
        dim = x.ndim - d + i
        x = F.transpose(F.matmul(F.transpose(x, dim, -1), _averaging_matrix(size, o, x)), dim,
                        -1)
    return x


def _averaging_matrix(size: int, out: int, like: Tensor) -> Tensor:
    """(size, out): column ``j`` averages torch's window ``floor(j*size/out) .. ceil((j+1)*size/out)``."""
    m = np.zeros((size, out), dtype=like.dtype.name)
    for j in range(out):
        start, end = (j * size) // out, -(-((j + 1) * size) // out)
        m[start:end, j] = 1.0 / (end - start)
    return buffer_tensor(m)


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """1-D adaptive average pooling of ``input`` (N, C, L) or (C, L) to ``output_size``."""
    return adaptive_avg_pool(input, 1, output_size, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """2-D adaptive average pooling of ``input`` (N, C, H, W) or (C, H, W), as torch.

    Output ``(i, j)`` averages rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho)`` and the same columns.

    Args:
        output_size: an int, or an (h, w) tuple whose None entries keep the input's size.
    """
    return adaptive_avg_pool(input, 2, output_size, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    """3-D adaptive average pooling of ``input`` (N, C, D, H, W) or (C, D, H, W)."""
    return adaptive_avg_pool(input, 3, output_size, "adaptive_avg_pool3d")
