"""Convolution layers: Conv1d, Conv2d, Conv3d (``torch.nn`` semantics and initialisation)."""
from __future__ import annotations

import math
from typing import Any

from ...errors import with_location
from ...tracer import functions as F
from ...tracer.creation import empty
from ...tracer.provenance import user_location
from ...tracer.tensor import Tensor
from .. import init
from ..functional_conv import convolution, ntuple
from ..functional_extra import NUMPY_PAD_MODE, pad_by_index
from ..module import Module
from ..parameter import Parameter

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Shared by Conv1d/2d/3d: arguments, parameters, initialisation and ``extra_repr``."""

    dims = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None):
        super().__init__()
        name, d = type(self).__name__, self.dims
        loc = user_location()
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(with_location(f"{name}: groups must be a positive integer, got "
                                           f"{groups!r}", loc))
        if in_channels % groups:
            raise ValueError(with_location(f"{name}: in_channels ({in_channels}) must be "
                                           f"divisible by groups ({groups})", loc))
        if out_channels % groups:
            raise ValueError(with_location(f"{name}: out_channels ({out_channels}) must be "
                                           f"divisible by groups ({groups})", loc))
        self.kernel_size = ntuple(kernel_size, d, "kernel_size", name)
        self.stride = ntuple(stride, d, "stride", name)
        self.dilation = ntuple(dilation, d, "dilation", name)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(with_location(f"{name}: invalid padding string {padding!r}, "
                                               "should be one of {'valid', 'same'}", loc))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(with_location(f"{name}: padding='same' is not supported for "
                                               f"strided convolutions (stride={self.stride})",
                                               loc))
            self.padding: Any = padding
        else:
            self.padding = ntuple(padding, d, "padding", name)
        if padding_mode not in PADDING_MODES:
            raise ValueError(with_location(f"{name}: padding_mode must be one of "
                                           f"{list(PADDING_MODES)}, got {padding_mode!r}", loc))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups, self.padding_mode = groups, padding_mode
        self.transposed, self.output_padding = False, (0,) * d
        self.weight = Parameter(empty(out_channels, in_channels // groups, *self.kernel_size,
                                      dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # as torch: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        if self.padding_mode == "zeros":
            return convolution(x, self.weight, self.bias, self.stride, self.padding,
                               self.dilation, self.groups, name)
        lo, hi = self._explicit_padding()
        if x.ndim in (self.dims + 1, self.dims + 2):
            x = pad_by_index(x, lo, hi, NUMPY_PAD_MODE[self.padding_mode], name)
        return convolution(x, self.weight, self.bias, self.stride, 0, self.dilation,
                           self.groups, name)

    def _explicit_padding(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self.padding == "valid":
            return (0,) * self.dims, (0,) * self.dims
        if self.padding == "same":
            total = [dl * (k - 1) for k, dl in zip(self.kernel_size, self.dilation)]
            lo = tuple(t // 2 for t in total)
            return lo, tuple(t - a for t, a in zip(total, lo))
        return self.padding, self.padding

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) or (C_in, L) inputs; weight (C_out, C_in/groups, K).

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or a 1-tuple.
        padding: an int, a 1-tuple, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: independent channel groups (``in_channels`` and ``out_channels`` divisible).
        bias: add a learnable bias per output channel.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
    """

    dims = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W) inputs; weight
    (C_out, C_in/groups, KH, KW).

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or an (h, w) tuple.
        padding: an int, an (h, w) tuple, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: independent channel groups (``in_channels`` and ``out_channels`` divisible).
        bias: add a learnable bias per output channel.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
    """

    dims = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W) or (C_in, D, H, W) inputs; weight
    (C_out, C_in/groups, KD, KH, KW).

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or a (d, h, w) tuple.
        padding: an int, a (d, h, w) tuple, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: independent channel groups (``in_channels`` and ``out_channels`` divisible).
        bias: add a learnable bias per output channel.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
    """

    dims = 3
