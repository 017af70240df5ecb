"""The everyday Tensor API beyond the core ops (issue 12): rounding, ``%`` and ``//``,
triangles, masking, logical reductions, scans, sorting, flips and rolls, einsum, norms and
special functions.

Like ``functions.py``, everything is composed from the IR primitives (there is no floor, sort or
scan primitive), so autodiff, fusion and both backends come for free. Errors name the op, the
shapes and the user's ``file:line``.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.dtypes import is_float
from ..ir.errors import DTypeError, with_location
from ..ir.node import Node
from . import capture
from . import dtype as dt
from . import functions as F
from .creation import buffer_tensor
from .primitives import FUNCTIONS as PRIMITIVES
from .provenance import user_location
from .tensor import Tensor, _norm_dim

Scalar = int | float | bool
TensorLike = Tensor | int | float | bool
Dims = int | Sequence[int] | None


def _const(value: Scalar, like: Node, loc: str | None) -> Node:
    return ops.const(value, like.shape, like.dtype, loc)


# ---------------------------------------------------------------------------- rounding
def _truncated(n: Node, loc: str | None) -> tuple[Node, Node]:
    """``(exact, t)``: ``t`` is ``n`` rounded toward zero, computed through an int64 cast.

    Where ``exact`` is False (|n| at least 2^mantissa bits, inf, NaN) ``n`` is already whole and
    ``t`` is meaningless. The cast only ever sees sanitised values (casting NaN or inf to an
    integer is undefined), and the input is detached: rounding has a zero gradient, as in torch.
    """
    n = ops.unary("detach", n, loc)
    big = 2.0 ** (52 if n.dtype == "float64" else 23)
    exact = ops.binary("lt", ops.unary("abs", n, loc), _const(big, n, loc), loc)
    safe = ops.where(exact, n, _const(0.0, n, loc), loc)
    return exact, ops.cast(ops.cast(safe, "int64", loc), n.dtype, loc)


def _floor_node(n: Node, loc: str | None) -> Node:
    exact, t = _truncated(n, loc)
    floor = ops.where(ops.binary("lt", n, t, loc), ops.binary("sub", t, _const(1, t, loc), loc),
                      t, loc)
    return ops.where(exact, floor, ops.unary("detach", n, loc), loc)


def _trunc_node(n: Node, loc: str | None) -> Node:
    exact, t = _truncated(n, loc)
    return ops.where(exact, t, ops.unary("detach", n, loc), loc)


def _rounding(op: str, x: Tensor) -> Tensor:
    loc = user_location()
    if not is_float(x.node.dtype):
        return x  # integers are already whole (torch returns them unchanged)
    n = F._float_node(x, loc)
    if op == "floor":
        out = _floor_node(n, loc)
    elif op == "ceil":
        out = ops.unary("neg", _floor_node(ops.unary("neg", n, loc), loc), loc)
    elif op == "trunc":
        out = _trunc_node(n, loc)
    else:  # round half to even, as torch.round
        f = _floor_node(n, loc)
        frac = ops.binary("sub", ops.unary("detach", n, loc), f, loc)
        half = _const(0.5, n, loc)
        up = ops.binary("add", f, _const(1, f, loc), loc)
        f_half = ops.binary("mul", f, half, loc)
        even = ops.binary("eq", _floor_node(f_half, loc), f_half, loc)
        tie = ops.where(even, f, up, loc)
        out = ops.where(ops.binary("lt", half, frac, loc), up,
                        ops.where(ops.binary("lt", frac, half, loc), f, tie, loc), loc)
    return F.wrap(out, x)


def floor(x: Tensor) -> Tensor:
    """Round down to a whole number (the gradient is zero, as in torch)."""
    return _rounding("floor", x)


def ceil(x: Tensor) -> Tensor:
    """Round up to a whole number (zero gradient)."""
    return _rounding("ceil", x)


def trunc(x: Tensor) -> Tensor:
    """Round toward zero (zero gradient)."""
    return _rounding("trunc", x)


def round(x: Tensor, decimals: int = 0) -> Tensor:  # noqa: A001 - torch.round
    """Round half to even, like torch.round; ``decimals`` scales by 10**decimals first."""
    if decimals:
        scale = 10.0 ** decimals
        return _rounding("round", x * scale) / scale
    return _rounding("round", x)


def frac(x: Tensor) -> Tensor:
    """``x - trunc(x)`` (its gradient is 1, as in torch)."""
    return x - trunc(x)


# ---------------------------------------------------------------------------- % and //
def _check_int_divisor(op: str, b: TensorLike, loc: str | None) -> None:
    """Integer division by zero raises, as torch's does (checked when the divisor's value is
    known: a realized tensor, or each call's argument under fusegrad.compile)."""
    def check(arr: np.ndarray) -> None:
        if not arr.all():
            raise RuntimeError(with_location(f"{op}: ZeroDivisionError (integer division by "
                                             "zero)", loc))
    if isinstance(b, Tensor):
        if b.node.size:
            capture.check_values(b, check)
    elif not isinstance(b, builtins.float) and not b:
        check(np.zeros(1))


def _floor_divmod(op: str, a: TensorLike, b: TensorLike, loc: str | None
                  ) -> tuple[Node, Node, Node, Node, str]:
    """Broadcast ``a`` and ``b`` and return ``(q, r, na, nb, dtype)`` with ``q = floor(a / b)``
    and ``r = a - q * b`` (the sign of ``b``), as torch's ``//`` and ``%``.

    Floats: ``q`` is the floor of the quotient, detached, so ``r`` has torch's gradients (1 for
    ``a``, ``-q`` for ``b``). Integers: the quotient is computed in float64, then corrected
    by one step each way from the exact int64 remainder (exact while |a| < 2**53).
    """
    shape = F.broadcast_shapes(F._shape(a), F._shape(b), op=op, loc=loc)
    common = F._result_dtype(a, b)
    if common == "bool":
        F._fail(op, "not implemented for bool tensors; convert with .long() first", loc,
                NotImplementedError)
    na, nb = F._operand(a, shape, common, loc), F._operand(b, shape, common, loc)
    if is_float(common):
        q = _floor_node(ops.binary("div", na, nb, loc), loc)
        r = ops.binary("sub", na, ops.binary("mul", q, nb, loc), loc)
        return q, r, na, nb, common
    _check_int_divisor(op, b, loc)
    zero, one = ops.const(0, shape, common, loc), ops.const(1, shape, common, loc)
    safe_b = ops.where(ops.binary("eq", nb, zero, loc), one, nb, loc)
    af, bf = ops.cast(na, "float64", loc), ops.cast(safe_b, "float64", loc)
    q = ops.cast(_floor_node(ops.binary("div", af, bf, loc), loc), common, loc)
    r = ops.binary("sub", na, ops.binary("mul", q, safe_b, loc), loc)
    over = _nonzero_with_opposite_signs(r, r, safe_b, loc)  # r has the wrong sign: q too big
    q = ops.where(over, ops.binary("sub", q, one, loc), q, loc)
    r = ops.where(over, ops.binary("add", r, safe_b, loc), r, loc)
    abs_b = ops.unary("abs", safe_b, loc)
    under = ops.binary("le", abs_b, ops.unary("abs", r, loc), loc)  # |r| >= |b|: q one short
    q = ops.where(under, ops.binary("add", q, one, loc), q, loc)
    r = ops.where(under, ops.binary("sub", r, safe_b, loc), r, loc)
    return q, r, na, nb, common


def floor_divide(a: TensorLike, b: TensorLike) -> Tensor:
    """``a // b``: the quotient rounded down (torch's sign rules), int or float by promotion.

    Its gradient is zero (torch does not differentiate it); integer division by zero raises.
    """
    loc = user_location()
    q, *_ = _floor_divmod("floor_divide", a, b, loc)
    return F.wrap(q, a, b)


def remainder(a: TensorLike, b: TensorLike) -> Tensor:
    """``a % b``: ``a - floor(a / b) * b``, which has the sign of the divisor (Python's rule)."""
    loc = user_location()
    _, r, *_ = _floor_divmod("remainder", a, b, loc)
    return F.wrap(r, a, b)


def fmod(a: TensorLike, b: TensorLike) -> Tensor:
    """C's fmod: ``a - trunc(a / b) * b``, which has the sign of the dividend."""
    loc = user_location()
    _, r, na, nb, _ = _floor_divmod("fmod", a, b, loc)
    # the floor quotient is one below the truncated one: inexact, operands of opposite signs
    shift = _nonzero_with_opposite_signs(r, na, nb, loc)
    return F.wrap(ops.where(shift, ops.binary("sub", r, nb, loc), r, loc), a, b)


def _nonzero_with_opposite_signs(r: Node, a: Node, b: Node, loc: str | None) -> Node:
    """Where ``r != 0`` and ``a`` and ``b`` have opposite signs."""
    zero = _const(0, r, loc)
    signs_differ = ops.binary("ne", ops.binary("lt", a, zero, loc),
                              ops.binary("lt", b, zero, loc), loc)
    return ops.where(ops.binary("eq", r, zero, loc), ops.const(False, r.shape, "bool", loc),
                     signs_differ, loc)



def div_rounded(a: TensorLike, b: TensorLike, rounding_mode: str) -> Tensor:
    """``div(a, b, rounding_mode=...)``: ``'floor'`` is ``a // b``; ``'trunc'`` rounds toward
    zero (floats: the quotient truncated; integers: exact)."""
    loc = user_location()
    if rounding_mode == "floor":
        q, *_ = _floor_divmod("div", a, b, loc)
        return F.wrap(q, a, b)
    if rounding_mode != "trunc":
        F._fail("div", f"expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                f"{rounding_mode!r}", loc, RuntimeError)
    q, r, na, nb, common = _floor_divmod("div", a, b, loc)
    if is_float(common):
        return F.wrap(_trunc_node(ops.binary("div", na, nb, loc), loc), a, b)
    bump = _nonzero_with_opposite_signs(r, na, nb, loc)  # floor is one below trunc
    return F.wrap(ops.where(bump, ops.binary("add", q, _const(1, q, loc), loc), q, loc), a, b)


# ---------------------------------------------------------------------------- triangles, masks
def _arange_node(n: int, loc: str | None) -> Node:
    return ops.buffer(F._arange_buffer(n), loc)


def _triangle(op: str, x: Tensor, diagonal: int, upper: bool) -> Tensor:
    loc = user_location()
    if x.ndim < 2:
        F._fail(op, f"input tensor must have at least 2 dimensions, got shape "
                f"{list(x.node.shape)}", loc)
    m, n = x.node.shape[-2:]
    rows = ops.expand(ops.reshape(_arange_node(m, loc), (m, 1), loc), (m, n), loc)
    cols = ops.expand(ops.reshape(_arange_node(n, loc), (1, n), loc), (m, n), loc)
    offset = ops.binary("sub", cols, rows, loc)  # j - i: 0 on the diagonal
    k = ops.const(diagonal, (m, n), "int64", loc)
    keep = ops.binary("le", k, offset, loc) if upper else ops.binary("le", offset, k, loc)
    nx = F.node_of(x)
    keep = F.broadcast_node(keep, nx.shape, loc)
    return F.wrap(ops.where(keep, nx, _const(0, nx, loc), loc), x)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two dims (``j - i >= diagonal``); the rest is zero."""
    return _triangle("triu", x, diagonal, upper=True)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two dims (``j - i <= diagonal``); the rest is zero."""
    return _triangle("tril", x, diagonal, upper=False)


def masked_fill(x: Tensor, mask: Tensor, value: TensorLike) -> Tensor:
    """``x`` with ``value`` (a number or a 0-d tensor, cast to x's dtype) where ``mask`` is
    True; ``mask`` is a bool tensor broadcastable to x. A 0-d tensor value gets its gradient."""
    loc = user_location()
    if not isinstance(mask, Tensor) or mask.node.dtype != "bool":
        F._fail("masked_fill", "only supports boolean masks, but got mask with dtype "
                f"{mask.node.dtype if isinstance(mask, Tensor) else type(mask).__name__}", loc,
                DTypeError)
    if isinstance(value, Tensor) and value.ndim:
        F._fail("masked_fill", "only supports a 0-dimensional value tensor, but got tensor with "
                f"{value.ndim} dimension(s)", loc, RuntimeError)
    shape = x.node.shape
    if F.broadcast_shapes(shape, mask.node.shape, op="masked_fill", loc=loc) != shape:
        F._fail("masked_fill", f"mask of shape {list(mask.node.shape)} cannot be broadcast to "
                f"the input's shape {list(shape)}", loc)
    node = ops.where(F.broadcast_node(F.node_of(mask), shape, loc),
                     F._operand(value, shape, x.node.dtype, loc), F.node_of(x), loc)
    return F.wrap(node, x, value)


# ---------------------------------------------------------------------------- logical reductions
def _logical_reduce(op: str, x: Tensor, dim: Dims, keepdim: bool) -> Tensor:
    """all / any by counting elements: ``all`` has no zero element, ``any`` a nonzero one."""
    loc = user_location()
    dims = F._dims(dim, x.ndim, op)
    n = F.node_of(x)
    # a nonzero NaN is True (as a cast to bool), so compare with zero rather than cast
    hit = ops.binary("eq" if op == "all" else "ne", n, _const(0, n, loc), loc)
    count = ops.cast(hit, "int64", loc)
    count = ops.reduce("sum", count, dims, loc) if dims else count
    zero = _const(0, count, loc)
    out = ops.binary("eq", count, zero, loc) if op == "all" else \
        ops.binary("lt", zero, count, loc)
    return Tensor._from_node(F._squeeze_dims(out, dims, keepdim, loc))


def all(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """Whether every element (along ``dim``) is nonzero; a bool tensor."""
    return _logical_reduce("all", x, dim, keepdim)


def any(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """Whether some element (along ``dim``) is nonzero; a bool tensor."""
    return _logical_reduce("any", x, dim, keepdim)


# ---------------------------------------------------------------------------- scans
def pad_with(node: Node, shape: tuple[int, ...], placement: tuple[tuple[int, int], ...],
             value: Scalar, loc: str | None) -> Node:
    """``node`` placed into ``shape`` (``ops.pad``) with ``value`` around it instead of zeros."""
    padded = ops.pad(node, shape, placement, loc)
    if value == 0 and not (isinstance(value, builtins.float) and math.copysign(1, value) < 0):
        return padded
    inside = ops.pad(ops.const(True, node.shape, "bool", loc), shape, placement, loc)
    return ops.where(inside, padded, ops.const(value, shape, node.dtype, loc), loc)


def _shift(n: Node, d: int, k: int, fill: Scalar, loc: str | None) -> Node:
    """``n`` moved ``k`` places up along ``d`` (``out[i] = n[i - k]``), ``fill`` coming in."""
    size = n.shape[d]
    kept = ops.slice_(n, tuple((0, size - k, 1) if i == d else (0, s, 1)
                               for i, s in enumerate(n.shape)), loc)
    return pad_with(kept, n.shape, tuple((k, 1) if i == d else (0, 1)
                                          for i in range(len(n.shape))), fill, loc)


def _scan(op: str, x: Tensor, dim: int, dtype: Any) -> Tensor:
    """Inclusive prefix sums or products along ``dim`` in ceil(log2 n) steps of shift-and-combine
    (Hillis-Steele): exact for integers, and cumprod's gradient needs no division, so zeros are
    handled exactly."""
    loc = user_location()
    d = _norm_dim(dim, x.ndim, op)
    n = F.node_of(x)
    out_dt = dt.resolve(dtype) if dtype is not None else \
        ("int64" if not is_float(n.dtype) else n.dtype)
    n = ops.cast(n, out_dt, loc)
    if x.ndim == 0:
        return F.wrap(n, x)
    combine, fill = ("add", 0) if op == "cumsum" else ("mul", 1)
    k = 1
    while k < n.shape[d]:
        n = ops.binary(combine, n, _shift(n, d, k, fill, loc), loc)
        k *= 2
    return F.wrap(n, x)


def cumsum(x: Tensor, dim: int, dtype: Any = None) -> Tensor:
    """Running sums along ``dim``; integers and bools give int64, as in torch."""
    return _scan("cumsum", x, dim, dtype)


def cumprod(x: Tensor, dim: int, dtype: Any = None) -> Tensor:
    """Running products along ``dim``; forward and gradient are exact with zeros too."""
    return _scan("cumprod", x, dim, dtype)


# ---------------------------------------------------------------------------- reordering
def _select(x: Tensor, d: int, index: np.ndarray, loc: str | None) -> Tensor:
    """``x`` reordered along ``d`` by a known index array (a gather; its VJP scatters)."""
    return F._take(x, d, buffer_tensor(index.astype(np.int64)), loc)


def flip(x: Tensor, *args: int | Sequence[int], dims: int | Sequence[int] | None = None
         ) -> Tensor:
    """``x`` reversed along each of ``dims`` (``flip(x, (0, 1))``, ``x.flip(0, 1)`` or
    ``dims=...``)."""
    loc = user_location()
    wanted = F._shape_arg(args) if args else (dims,) if isinstance(dims, int) else \
        tuple(dims or ())
    out = x
    for d in sorted({_norm_dim(d, x.ndim, "flip") for d in wanted}):
        if x.ndim and x.node.shape[d] > 1:
            out = _select(out, d, np.arange(x.node.shape[d])[::-1], loc)
    return out


def fliplr(x: Tensor) -> Tensor:
    """``flip(x, 1)`` (at least 2 dims)."""
    if x.ndim < 2:
        F._fail("fliplr", f"input must be >= 2-d, got shape {list(x.node.shape)}",
                user_location())
    return flip(x, 1)


def flipud(x: Tensor) -> Tensor:
    """``flip(x, 0)`` (at least 1 dim)."""
    if x.ndim < 1:
        F._fail("flipud", "input must be >= 1-d", user_location())
    return flip(x, 0)


def roll(x: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None
         ) -> Tensor:
    """Elements shifted ``shifts`` places along ``dims`` (wrapping around); without ``dims``
    the flattened tensor is rolled and the shape restored."""
    loc = user_location()
    shifts_t = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts_t) != 1:
            F._fail("roll", f"shifts {list(shifts_t)} need matching dims", loc, RuntimeError)
        return F.reshape(roll(F.flatten(x), shifts_t[0], 0), x.node.shape)
    dims_t = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts_t) != len(dims_t):
        F._fail("roll", f"shifts and dimensions must align. shifts: {len(shifts_t)}, dims: "
                f"{len(dims_t)}", loc, RuntimeError)
    out = x
    for shift, dim in zip(shifts_t, dims_t):
        d = _norm_dim(dim, x.ndim, "roll")
        size = x.node.shape[d]
        s = shift % size if size else 0
        if s:
            out = F.cat([F.slice_dim(out, d, size - s, size), F.slice_dim(out, d, 0, size - s)],
                        d)
    return out


def repeat_interleave(x: Tensor, repeats: int | Tensor | None = None, dim: int | None = None,
                      output_size: int | None = None) -> Tensor:
    """Each element repeated ``repeats`` times along ``dim`` (the flattened tensor without it).

    An int repeats by expand + reshape. A tensor of counts gives a shape that depends on its
    values, so they are read now (not inside ``fusegrad.compile``). ``repeat_interleave(counts)``
    alone gives the indices ``0, 0, 1, ...`` as torch's does.
    """
    loc = user_location()
    if repeats is None:
        counts = np.asarray(x.tolist(), dtype=np.int64).reshape(-1)
        return buffer_tensor(np.repeat(np.arange(counts.size), counts))
    if dim is None:
        x, d = F.flatten(x), 0
    else:
        d = _norm_dim(dim, x.ndim, "repeat_interleave")
    if isinstance(repeats, Tensor) and repeats.node.size != 1:
        counts = np.asarray(repeats.tolist(), dtype=np.int64).reshape(-1)
        if counts.size != x.node.shape[d] or (counts < 0).any():
            F._fail("repeat_interleave", f"repeats must have the same size as input along dim "
                    f"{d} ({x.node.shape[d]}) and be non-negative, got {counts.tolist()}", loc)
        return _select(x, d, np.repeat(np.arange(counts.size), counts), loc)
    r = int(repeats.item() if isinstance(repeats, Tensor) else repeats)
    if r < 0:
        F._fail("repeat_interleave", f"repeats can not be negative, got {r}", loc, RuntimeError)
    shape = x.node.shape
    y = F.unsqueeze(x, d + 1)
    y = F.expand(y, shape[:d + 1] + (r,) + shape[d + 1:])
    return F.reshape(y, shape[:d] + (shape[d] * r,) + shape[d + 1:])


# ---------------------------------------------------------------------------- sorting
SortResult = namedtuple("SortResult", ["values", "indices"])


def _isnan(n: Node, loc: str | None) -> Node:
    return ops.binary("ne", n, n, loc)


def _rank_order(x: Tensor, d: int, descending: bool, loc: str | None) -> Tensor:
    """The indices that sort ``x`` along ``d`` stably (ties keep their order, NaN is largest).

    There is no sort primitive: element i's rank is the number of elements that go before it,
    ``sum_j (x_j before x_i) or (x_j == x_i and j < i)``, and the k-th index is the ``i``
    whose rank is k. Both steps compare all pairs: O(n^2) time and memory along ``d``.
    """
    nx = ops.unary("detach", F.node_of(x), loc) if x.requires_grad else F.node_of(x)
    if x.node.dtype == "bool":
        nx = ops.cast(nx, "int64", loc)
    last = x.ndim - 1
    perm = tuple(i for i in range(x.ndim) if i != d) + (d,)
    nx = ops.permute(nx, perm, loc)
    lead, size = nx.shape[:-1], nx.shape[-1]
    pair = lead + (size, size)  # [..., i, j]
    xi = ops.expand(ops.reshape(nx, lead + (size, 1), loc), pair, loc)
    xj = ops.expand(ops.reshape(nx, lead + (1, size), loc), pair, loc)
    a, b = (xi, xj) if descending else (xj, xi)  # x_j goes before x_i when a < b
    if is_float(nx.dtype):
        nan_a, nan_b = _isnan(a, loc), _isnan(b, loc)
        no = ops.const(False, pair, "bool", loc)
        before = ops.where(nan_a, no, ops.where(nan_b, ops.const(True, pair, "bool", loc),
                                                ops.binary("lt", a, b, loc), loc), loc)
        tie = ops.where(nan_a, nan_b, ops.binary("eq", a, b, loc), loc)
    else:
        before, tie = ops.binary("lt", a, b, loc), ops.binary("eq", a, b, loc)
    idx = _arange_node(size, loc)
    i_ = ops.expand(ops.reshape(idx, (1,) * len(lead) + (size, 1), loc), pair, loc)
    j_ = ops.expand(ops.reshape(idx, (1,) * len(lead) + (1, size), loc), pair, loc)
    earlier = ops.where(tie, ops.binary("lt", j_, i_, loc), ops.const(False, pair, "bool", loc),
                        loc)
    goes_first = ops.where(before, ops.const(True, pair, "bool", loc), earlier, loc)
    rank = ops.reduce("sum", ops.cast(goes_first, "int64", loc), (len(pair) - 1,), loc)
    # rank: [..., i, 1] -> [..., 1, i]; order[k] = sum_i i * (rank_i == k)
    rank = ops.expand(ops.reshape(rank, lead + (1, size), loc), pair, loc)
    hit = ops.binary("eq", rank, i_, loc)  # [..., k, i]: element i has rank k
    order = ops.reduce("sum", ops.where(hit, j_, ops.const(0, pair, "int64", loc), loc),
                       (len(pair) - 1,), loc)
    order = ops.reshape(order, lead + (size,), loc)
    inverse = tuple(perm.index(i) for i in range(x.ndim)) if last != d else None
    return Tensor._from_node(ops.permute(order, inverse, loc) if inverse else order)


def sort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = False
         ) -> SortResult:
    """``(values, indices)`` sorted along ``dim``, always stably (``stable`` is accepted for
    torch's signature); values are differentiable (a gather). O(n^2) in the sorted dim's size:
    meant for small dims."""
    loc = user_location()
    if x.ndim == 0:
        return SortResult(x, Tensor._from_node(ops.const(0, (), "int64", loc)))
    d = _norm_dim(dim, x.ndim, "sort")
    order = _rank_order(x, d, descending, loc)
    return SortResult(F.gather(x, d, order), order)


def argsort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = False
            ) -> Tensor:
    """The indices of ``sort`` (stable; O(n^2) in the sorted dim's size)."""
    return sort(x, dim, descending, stable).indices


def msort(x: Tensor) -> Tensor:
    """``sort(x, 0).values``."""
    return sort(x, 0).values


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True  # noqa: A002
         ) -> SortResult:
    """The ``k`` largest (or smallest) elements along ``dim`` and their indices, in order
    (ties in index order). Built on ``sort``: O(n^2) in the dim's size."""
    loc = user_location()
    d = _norm_dim(dim, x.ndim, "topk")
    size = x.node.shape[d] if x.ndim else 1
    if not 0 <= k <= size:
        F._fail("topk", f"k ({k}) is out of range for dim {d} of size {size} (shape "
                f"{list(x.node.shape)})", loc, RuntimeError)
    values, indices = sort(x, d, descending=largest)
    if x.ndim == 0:
        return SortResult(values, indices)
    return SortResult(F.slice_dim(values, d, 0, k), F.slice_dim(indices, d, 0, k))


# ---------------------------------------------------------------------------- linear algebra
def _scaled_sum(op: str, base: Tensor, product: Tensor, beta: Scalar, alpha: Scalar) -> Tensor:
    """``beta * base + alpha * product``; with ``beta == 0`` base is ignored (NaN included)."""
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        shape = F.broadcast_shapes(base.node.shape, product.node.shape, op=op,
                                   loc=user_location())
        return F.expand(product, shape)
    return product + (base * beta if beta != 1 else base)


def _check_ndim(op: str, want: int, named: Sequence[tuple[str, Tensor]]) -> None:
    for name, t in named:
        if t.ndim != want:
            F._fail(op, f"{name} must be a {want}-D tensor, got shape {list(t.node.shape)}",
                    user_location())


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: Scalar = 1,  # noqa: A002
          alpha: Scalar = 1) -> Tensor:
    """``beta * input + alpha * (mat1 @ mat2)``; input broadcasts to (n, p)."""
    _check_ndim("addmm", 2, (("mat1", mat1), ("mat2", mat2)))
    return _scaled_sum("addmm", input, F.matmul(mat1, mat2), beta, alpha)


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: Scalar = 1,  # noqa: A002
            alpha: Scalar = 1) -> Tensor:
    """``beta * input + alpha * bmm(batch1, batch2)``; input broadcasts to (b, n, p)."""
    return _scaled_sum("baddbmm", input, F.bmm(batch1, batch2), beta, alpha)


def addmv(input: Tensor, mat: Tensor, vec: Tensor, *, beta: Scalar = 1,  # noqa: A002
          alpha: Scalar = 1) -> Tensor:
    """``beta * input + alpha * (mat @ vec)``."""
    _check_ndim("addmv", 2, (("mat", mat),))
    _check_ndim("addmv", 1, (("vec", vec),))
    return _scaled_sum("addmv", input, F.matmul(mat, vec), beta, alpha)


def outer(a: Tensor, b: Tensor) -> Tensor:
    """``a[i] * b[j]`` for 1-D ``a`` and ``b``."""
    _check_ndim("outer", 1, (("input", a), ("vec2", b)))
    return F.unsqueeze(a, 1) * F.unsqueeze(b, 0)


ger = outer


def dot(a: Tensor, b: Tensor) -> Tensor:
    """The inner product of two 1-D tensors of equal size."""
    _check_ndim("dot", 1, (("input", a), ("other", b)))
    if a.node.shape != b.node.shape:
        F._fail("dot", f"1D tensors expected to have the same size, got {a.node.shape[0]} and "
                f"{b.node.shape[0]}", user_location())
    return F.matmul(a, b)


# ---------------------------------------------------------------------------- einsum
def _einsum_labels(equation: str, operands: Sequence[Tensor], loc: str | None
                   ) -> tuple[list[list[str]], list[str]]:
    """Each operand's labels and the output's; ``...`` becomes labels ``"0"``, ``"1"``...
    (right-aligned, so shorter ellipses broadcast as in torch)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(operands):
        F._fail("einsum", f"the equation has {len(subs)} operand(s) but {len(operands)} "
                "were given", loc, RuntimeError)
    ell = builtins.max((t.ndim - len(s.replace("...", "")) for s, t in zip(subs, operands)
                        if "..." in s), default=0)
    labels: list[list[str]] = []
    for i, (s, t) in enumerate(zip(subs, operands)):
        head, dots, tail = s.partition("...")
        n_ell = t.ndim - len(head) - len(tail) if dots else 0
        ls = list(head) + [str(k) for k in range(ell - n_ell, ell)] + list(tail)
        if len(ls) != t.ndim or n_ell < 0 or not builtins.all(c.isalpha() for c in head + tail):
            F._fail("einsum", f"subscripts {s!r} do not fit operand {i} of shape "
                    f"{list(t.node.shape)}", loc, RuntimeError)
        labels.append(ls)
    ell_labels = [str(k) for k in range(ell)]
    if arrow:
        head, dots, tail = rhs.partition("...")
        out = list(head) + (ell_labels if dots else []) + list(tail)
        seen = {c for ls in labels for c in ls}
        for c in out:
            if c not in seen or out.count(c) > 1:
                F._fail("einsum", f"output subscript {c!r} appears {out.count(c)} times or "
                        "not in the inputs", loc, RuntimeError)
    else:
        letters = [c for ls in labels for c in ls if c.isalpha()]
        out = ell_labels + sorted(c for c in set(letters) if letters.count(c) == 1)
    return labels, out


def _diagonal_labels(t: Tensor, ls: list[str]) -> tuple[Tensor, list[str]]:
    """Repeated labels in one operand (``ii``) take the diagonal of those dims."""
    while len(set(ls)) < len(ls):
        c = next(c for c in ls if ls.count(c) > 1)
        i, j = [k for k, x in enumerate(ls) if x == c][:2]
        rest = [k for k in range(t.ndim) if k not in (i, j)]
        n = t.node.shape[i]
        t = F.reshape(F.permute(t, rest + [i, j]), tuple(t.node.shape[k] for k in rest) + (n * n,))
        t = F.slice_dim(t, -1, 0, n * n, n + 1)
        ls = [ls[k] for k in rest] + [c]
    return t, ls


def _sum_labels(t: Tensor, ls: list[str], drop: set[str]) -> tuple[Tensor, list[str]]:
    dims = [k for k, c in enumerate(ls) if c in drop]
    if not dims:
        return t, ls
    return F.sum(t, dims), [c for c in ls if c not in drop]


def _contract(a: Tensor, la: list[str], b: Tensor, lb: list[str], keep: set[str],
              sizes: dict[str, int]) -> tuple[Tensor, list[str]]:
    """Multiply two operands and sum their shared labels not in ``keep``: batch, left-only,
    contracted and right-only labels are grouped into one batched matmul."""
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]

    def arrange(t: Tensor, ls: list[str], order: list[str]) -> Tensor:
        t = F.permute(t, [ls.index(c) for c in order])
        return F.expand(t, tuple(sizes[c] for c in order))  # size-1 dims broadcast

    nb, nl, ns, nr = (math.prod(sizes[c] for c in g) for g in (batch, left, summed, right))
    a3 = F.reshape(arrange(a, la, batch + left + summed), (nb, nl, ns))
    b3 = F.reshape(arrange(b, lb, batch + summed + right), (nb, ns, nr))
    if is_float(a3.node.dtype) and is_float(b3.node.dtype):
        prod = F.matmul(a3, b3)
    else:  # no integer matmul: broadcast the product and sum
        prod = F.sum(F.unsqueeze(a3, 3) * F.unsqueeze(b3, 1), 2)
    out_labels = batch + left + right
    return F.reshape(prod, tuple(sizes[c] for c in out_labels)), out_labels


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation (torch's subscripts, ``...`` and implicit output included).

    Repeated labels in one operand take a diagonal; labels no later operand or the output
    needs are summed early; each pair of operands is one batched matmul.
    """
    loc = user_location()
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        F._fail("einsum", "must provide at least one operand", loc, RuntimeError)
    labels, out = _einsum_labels(equation, operands, loc)
    sizes: dict[str, int] = {}
    for i, (t, ls) in enumerate(zip(operands, labels)):
        for c, s in zip(ls, t.node.shape):
            prev = sizes.get(c, 1)
            if s != 1 and prev not in (1, s):
                F._fail("einsum", f"operand {i} (shape {list(t.node.shape)}) has size {s} for "
                        f"subscript {c!r}, which is {prev} elsewhere", loc)
            sizes[c] = s if s != 1 else prev
    pending = [_diagonal_labels(t, ls) for t, ls in zip(operands, labels)]

    def needed(rest: list[tuple[Tensor, list[str]]]) -> set[str]:
        return set(out).union(*(ls for _, ls in rest))

    acc, la = _sum_labels(*pending[0], set(pending[0][1]) - needed(pending[1:]))
    for k in range(1, len(pending)):
        keep = needed(pending[k + 1:])
        b, lb = pending[k]
        acc, la = _sum_labels(acc, la, set(la) - keep - set(lb))
        b, lb = _sum_labels(b, lb, set(lb) - keep - set(la))
        acc, la = _contract(acc, la, b, lb, keep, sizes)
    acc, la = _sum_labels(acc, la, set(la) - set(out))
    acc = F.permute(acc, [la.index(c) for c in out]) if out else acc
    return F.expand(acc, tuple(sizes[c] for c in out)) if out else acc


# ---------------------------------------------------------------------------- norms
def _zero_safe(s: Tensor, fn: Any) -> Tensor:
    """``fn(s)`` for ``s > 0`` and 0 where ``s == 0``, with a zero gradient there (torch masks
    the norm's gradient at zero instead of returning ``inf * 0``)."""
    zero = F.eq(s, 0.0)
    return F.where(zero, 0.0, fn(F.where(zero, 1.0, s)))


def vector_norm(x: Tensor, ord: float = 2, dim: Dims = None, keepdim: bool = False,  # noqa: A002
                dtype: Any = None) -> Tensor:
    """``(sum |x|^ord)^(1/ord)`` over ``dim`` (all dims by default); ``ord`` may be inf, -inf
    or 0 (the count of nonzeros), as ``torch.linalg.vector_norm``."""
    loc = user_location()
    if not is_float(x.node.dtype):
        F._fail("linalg.vector_norm", "expected a floating point tensor as input, got "
                f"{x.node.dtype}", loc, DTypeError)
    if dtype is not None:
        x = F.to_dtype(x, dtype)
    dims = F._dims(dim, x.ndim, "linalg.vector_norm")
    reduce = (lambda t: F.sum(t, dims, keepdim)) if dims else (lambda t: t)
    if ord == math.inf or ord == -math.inf:
        a = F.abs(x)
        return (F.amax if ord > 0 else F.amin)(a, dims, keepdim) if dims else a
    if ord == 0:  # the count of nonzeros: requires grad as torch's does (a zero gradient)
        return F.wrap(reduce(F.to_dtype(F.ne(x, 0.0), x.node.dtype)).node, x)
    if ord == 1:
        return reduce(F.abs(x))
    if ord == 2:
        return _zero_safe(reduce(x * x), F.sqrt)
    return _zero_safe(reduce(F.abs(x) ** ord), lambda s: s ** (1.0 / ord))


def norm(x: Tensor, p: float | str | None = "fro", dim: Dims = None, keepdim: bool = False,
         dtype: Any = None) -> Tensor:
    """torch.norm: ``'fro'`` (or None) is the 2-norm over ``dim`` (all by default); a number is
    ``vector_norm``. The nuclear norm is not supported."""
    if p == "nuc":
        F._fail("norm", "the nuclear norm needs singular values, which fusegrad does not "
                "compute", user_location(), NotImplementedError)
    if p is None or p == "fro":
        p = 2
    elif isinstance(p, str):
        F._fail("norm", f"unknown norm {p!r}; use 'fro', 'nuc' or a number", user_location(),
                RuntimeError)
    return vector_norm(x, p, dim, keepdim, dtype)


# ---------------------------------------------------------------------------- special functions
# the error function is a primitive of the op table (nnlib's exact gelu uses it from here)
erf = PRIMITIVES["erf"]


def log1p(x: Tensor) -> Tensor:
    """log(1 + x), accurate for tiny ``x`` (Goldberg's trick: the rounding of 1+x cancels)."""
    w = x + 1.0
    d = w - 1.0
    exact = F.eq(d, 0.0)
    return F.where(exact, x, F.log(w) * (x / F.where(exact, 1.0, d)))


def expm1(x: Tensor) -> Tensor:
    """e^x - 1, accurate for tiny ``x`` (Kahan's trick: ``(u - 1) * x / log u`` with u = e^x)."""
    u = F.exp(x)
    um1 = u - 1.0
    exact = F.eq(um1, 0.0)  # u rounds to 1: e^x - 1 is x to working precision
    big = F.eq(um1, -1.0) | F.eq(u, math.inf)
    safe_log = F.log(F.where(exact | big, 2.0, u))
    return F.where(exact, x, F.where(big, um1, um1 * (x / safe_log)))


def _float_test(x: Tensor, test: Any, on_int: bool) -> Tensor:
    """``test(node, loc)`` on a float tensor; integers are never NaN or infinite."""
    loc = user_location()
    n = F.node_of(x)
    if not is_float(n.dtype):
        return Tensor._from_node(ops.const(on_int, n.shape, "bool", loc))
    return Tensor._from_node(test(n, loc))


def _abs_vs_inf(op: str) -> Any:
    return lambda n, loc: ops.binary(op, ops.unary("abs", n, loc), _const(math.inf, n, loc), loc)


def _equals(value: float) -> Any:
    return lambda n, loc: ops.binary("eq", n, _const(value, n, loc), loc)


def isnan(x: Tensor) -> Tensor:
    """Where ``x`` is NaN (bool)."""
    return _float_test(x, _isnan, False)


def isinf(x: Tensor) -> Tensor:
    """Where ``x`` is +inf or -inf (bool)."""
    return _float_test(x, _abs_vs_inf("eq"), False)


def isfinite(x: Tensor) -> Tensor:
    """Where ``x`` is neither NaN nor infinite (bool)."""
    return _float_test(x, _abs_vs_inf("lt"), True)


def isposinf(x: Tensor) -> Tensor:
    """Where ``x`` is +inf (bool)."""
    return _float_test(x, _equals(math.inf), False)


def isneginf(x: Tensor) -> Tensor:
    """Where ``x`` is -inf (bool)."""
    return _float_test(x, _equals(-math.inf), False)


def nan_to_num(x: Tensor, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Tensor:
    """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf`` (by default the
    dtype's largest and smallest finite values); the gradient passes where x is finite."""
    if not is_float(x.node.dtype):
        return x
    info = np.finfo(x.node.dtype)
    posinf = float(info.max) if posinf is None else posinf
    neginf = float(info.min) if neginf is None else neginf
    out = F.where(isnan(x), nan, x)
    out = F.where(isposinf(x), posinf, out)
    return F.where(isneginf(x), neginf, out)


# ---------------------------------------------------------------------------- refused ops
def _refuse_dynamic(op: str, alternative: str) -> None:
    F._fail(op, f"the output's shape depends on the values (data-dependent shapes are not "
            f"supported: a traced program has fixed shapes); {alternative}", user_location(),
            NotImplementedError)


def nonzero(x: Tensor, *, as_tuple: bool = False) -> Tensor:
    """Refused: the number of nonzeros is data-dependent."""
    _refuse_dynamic("nonzero", "keep the shape with a bool mask and where()/masked_fill(), or "
                    "take x.numpy().nonzero() outside fusegrad.compile")


def argwhere(x: Tensor) -> Tensor:
    """Refused: the number of nonzeros is data-dependent."""
    _refuse_dynamic("argwhere", "keep the shape with a bool mask and where()/masked_fill(), or "
                    "take numpy.argwhere(x.numpy()) outside fusegrad.compile")


def masked_select(x: Tensor, mask: Tensor) -> Tensor:
    """Refused: the number of selected elements is data-dependent."""
    _refuse_dynamic("masked_select", "use where(mask, x, 0) (or masked_fill) and reduce, e.g. "
                    "(x * mask).sum() / mask.sum() for a masked mean")


def unique(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Refused: the number of distinct values is data-dependent."""
    _refuse_dynamic("unique", "take numpy.unique(x.numpy()) outside fusegrad.compile")
