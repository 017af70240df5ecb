"""Sliding windows (im2col) built as IR nodes: the shared piece of convolution, ``unfold`` and
pooling (``nnlib/functional_conv.py``).

Built through ``Tensor`` ops, the windows of one 3x3 convolution were about 80 ops (each tap a
``cat`` with zeros, strided slices and more ``cat``s), a third of cnn's forward tracing. Here
each zero padding is one ``pad`` node, which is what the passes made of the ``cat`` with zeros
(``pads_sum`` of a zero constant and the view: the constant's pad folds to zero and the add of
zero drops), so the optimized graph and its kernels are the same; the pre-pass graph has fewer
nodes. The caller (``nnlib``) has checked the arguments, so nothing here can meet bad input.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from ..ir import ops
from ..ir.macro import call, register
from ..ir.node import Node
from .functions import node_of, wrap
from .provenance import user_location
from .tensor import Tensor


def _pad_dim(x: Node, dim: int, before: int, after: int, loc: str | None) -> Node:
    """``x`` with ``before``/``after`` zeros around it along ``dim``."""
    if not before and not after:
        return x
    shape = list(x.shape)
    shape[dim] += before + after
    placement = tuple((before, 1) if d == dim else (0, 1) for d in range(len(shape)))
    return ops.pad(x, tuple(shape), placement, loc)


def sliding_windows(x: Tensor, first: int, kernel: Sequence[int], stride: Sequence[int],
                    dilation: Sequence[int], pad_lo: Sequence[int], out: Sequence[int],
                    stack_dim: int) -> Tensor:
    """Every window of ``x`` laid out along ``stack_dim`` (im2col), zeros where it is padding.

    ``x``'s spatial dims are ``first .. first + len(kernel) - 1`` and its size along
    ``stack_dim`` is 1. The result has spatial dim ``i`` of size ``out[i]`` and ``stack_dim`` of
    size ``prod(kernel)``: at output position ``o`` and kernel offset ``k`` (row-major over the
    kernel dims) it holds ``x`` at ``o * stride + k * dilation - pad_lo`` along each spatial
    dim, or 0 where that index falls outside ``x``. Traced as one macro node (``ir/macro.py``)
    that ``windows`` expands when a program is compiled: cnn's forward traced 215 nodes.
    """
    params = (first, tuple(kernel), tuple(stride), tuple(dilation), tuple(pad_lo), tuple(out),
              stack_dim)
    (node,) = call("windows", [node_of(x)], params, user_location())
    return wrap(node, x) if node.op == "macro" or node.inputs else wrap(node)


def windows(inputs: tuple[Node, ...], params: tuple, loc: str | None) -> list[Node]:
    """The nodes of ``sliding_windows``' macro.

    Each offset's view is pad-to-its-place-along-``stack_dim``, strided slices, then zero
    padding back to ``out``: the first op differs between offsets, so no view shares an
    intermediate node with another. In the backward pass the gradients of all views then meet
    only at ``x``, and their sum (col2im) is one kernel that reads the windows' gradient through
    index arithmetic; a shared intermediate would be summed and written out on its own.
    """
    (source,) = inputs
    first, kernel, stride, dilation, pad_lo, out, stack_dim = params
    taps = math.prod(kernel)
    total: Node | None = None
    for tap, offsets in enumerate(itertools.product(*(range(k) for k in kernel))):
        view: Node | None = _pad_dim(source, stack_dim, tap, taps - 1 - tap, loc)
        pads = []
        for i, k in enumerate(offsets):
            dim = first + i
            size, s, n = source.shape[dim], stride[i], out[i]
            shift = k * dilation[i] - pad_lo[i]          # input index read by output 0
            lo = min(n, max(0, -(shift // s)))            # first output inside the input
            hi = min(n, max(0, -(-(size - shift) // s)))  # one past the last
            if hi <= lo:
                view = None  # this offset only ever reads padding
                break
            start = lo * s + shift
            if start or hi - lo != size:  # else the slice would be the identity
                assert view is not None
                ranges = tuple((start, start + (hi - lo - 1) * s + 1, s) if d == dim else
                               (0, extent, 1) for d, extent in enumerate(view.shape))
                view = ops.slice_(view, ranges, loc)
            if lo or hi < n:
                pads.append((dim, lo, n - hi))
        if view is None:
            continue
        for dim, before, after in pads:
            view = _pad_dim(view, dim, before, after, loc)
        total = view if total is None else ops.binary("add", total, view, loc)
    if total is None:
        shape = list(source.shape)
        shape[stack_dim] = taps
        for i, n in enumerate(out):
            shape[first + i] = n
        return [ops.const(0, tuple(shape), source.dtype, loc)]
    return [total]


register("windows", windows)
