"""Pooling layers: max, average and adaptive average pooling in 1, 2 and 3 dims (``torch.nn``)."""
from __future__ import annotations

from typing import Any

from ...tracer.tensor import Tensor
from ..functional_conv import adaptive_avg_pool, avg_pool, max_pool, ntuple
from ..module import Module


class _MaxPoolNd(Module):
    """Max pooling; the arguments are kept as given, like torch (``stride`` defaults to
    ``kernel_size``)."""

    dims = 0

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x: Tensor) -> Any:
        return max_pool(x, self.dims, self.kernel_size, self.stride, self.padding, self.dilation,
                        self.ceil_mode, self.return_indices, type(self).__name__)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling over (N, C, L) or (C, L); see :class:`MaxPool2d`."""

    dims = 1


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling over (N, C, H, W) or (C, H, W).

    Each output's gradient goes to the first maximum of its window (row-major), as in torch.

    Args:
        kernel_size: the window, an int or (h, w).
        stride: the step, default ``kernel_size``.
        padding: implicit -inf padding on both sides, at most half the kernel.
        dilation: the spacing of window elements.
        return_indices: also return each maximum's flat index in its input plane.
        ceil_mode: round the output size up (a last, partial window).
    """

    dims = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling over (N, C, D, H, W) or (C, D, H, W); see :class:`MaxPool2d`."""

    dims = 3


class _AvgPoolNd(Module):
    dims = 0

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool(x, self.dims, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                        self.count_include_pad, self.divisor_override, type(self).__name__)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """1-D average pooling over (N, C, L) or (C, L); see :class:`AvgPool2d`.

    As torch's, it keeps ``kernel_size``, ``stride`` and ``padding`` as 1-tuples.
    """

    dims = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        name = type(self).__name__
        self.kernel_size = ntuple(self.kernel_size, 1, "kernel_size", name)
        self.stride = ntuple(self.stride, 1, "stride", name)
        self.padding = ntuple(self.padding, 1, "padding", name)


class AvgPool2d(_AvgPoolNd):
    """2-D average pooling over (N, C, H, W) or (C, H, W).

    Args:
        kernel_size: the window, an int or (h, w).
        stride: the step, default ``kernel_size``.
        padding: implicit zero padding on both sides, at most half the kernel.
        ceil_mode: round the output size up (a last, partial window).
        count_include_pad: divide by the window size including the padding (else by the
            number of input elements in the window).
        divisor_override: divide by this instead.
    """

    dims = 2


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling over (N, C, D, H, W) or (C, D, H, W); see :class:`AvgPool2d`."""

    dims = 3


class _AdaptiveAvgPoolNd(Module):
    dims = 0

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool(x, self.dims, self.output_size, type(self).__name__)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """1-D adaptive average pooling of (N, C, L) or (C, L) to ``output_size``."""

    dims = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """2-D adaptive average pooling of (N, C, H, W) or (C, H, W) to ``output_size``.

    Output ``(i, j)`` averages rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho)`` and the same columns.

    Args:
        output_size: an int, or an (h, w) tuple whose None entries keep the input's size.
    """

    dims = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """3-D adaptive average pooling of (N, C, D, H, W) or (C, D, H, W) to ``output_size``."""

    dims = 3
