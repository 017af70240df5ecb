"""Tensor operations: broadcasting, type promotion and composite ops built from IR primitives.

Each function checks its arguments when it is called and raises an error naming the op, the
shapes, the axis and the user's ``file:line``.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.device import copy_array, is_device_array, to_host
from ..ir.dtypes import is_float, promote, promote_scalar
from ..ir.errors import DTypeError, ShapeError, with_location
from ..ir.node import Node
from ..ir.optable import TABLE
from ..lru import LRUCache
from . import capture
from . import dtype as dt
from .grad_mode import is_grad_enabled
from .provenance import user_location
from .tensor import WRITES, Tensor, _norm_dim, pending_write

Scalar = int | float | bool
TensorLike = Tensor | int | float | bool


def _fail(op: str, msg: str, loc: str | None, kind: type = ShapeError) -> None:
    raise kind(with_location(f"{op}: {msg}", loc))


MODEL_DTYPE_HINT = "; convert the input (input.to(weight.dtype)) or the model (model.to(dtype))"


def check_same_dtype(op: str, named: Sequence[tuple[str, Tensor | None]], loc: str | None,
                     hint: str = "") -> None:
    """Refuse tensors of different dtypes where torch does (matmul, layers against their
    parameters) instead of promoting them silently; ``None`` entries are skipped."""
    present = [(name, t) for name, t in named if t is not None]
    first_name, first = present[0]
    for name, t in present[1:]:
        if t.node.dtype != first.node.dtype:
            _fail(op, f"{first_name} ({first.node.dtype}, shape {list(first.node.shape)}) and "
                  f"{name} ({t.node.dtype}, shape {list(t.node.shape)}) must have the same "
                  f"dtype{hint}", loc, DTypeError)


# ---------------------------------------------------------------------------- plumbing
def node_of(t: Tensor) -> Node:
    """The node to build on: cut from autograd under no_grad, a buffer for grad leaves; the
    pending value of another tensor's in-place update of the storage ``t`` shares."""
    if WRITES and t.node.op == "buffer":
        writer = pending_write(t)
        if writer is not None:
            return ops.unary("detach", ops.cast(writer.node, t.node.dtype))
    if t.requires_grad:
        if not is_grad_enabled():
            return ops.unary("detach", t.node) if t.node.op != "buffer" else \
                _detached_buffer(t.node)
        if t._is_leaf:
            return t._leaf_node()
    return t.node


def _detached_buffer(node: Node) -> Node:
    from .tensor import _detached
    return _detached(node)


def wrap(node: Node, *inputs: Any) -> Tensor:
    """A new Tensor for ``node``; it requires grad if any Tensor input does (and grad is on).
    Made from a tensor whose graph backward() freed, it cannot be differentiated either."""
    rg = freed = False
    if is_grad_enabled() and is_float(node.dtype):
        for i in inputs:
            if isinstance(i, Tensor) and i.requires_grad:
                rg = True
                freed = freed or i._graph_freed
    t = Tensor._from_node(node, rg)
    t._graph_freed = freed
    return t


def to_tensor(x: TensorLike, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    from .creation import tensor
    if like is not None and isinstance(x, (int, float, bool)):
        return tensor(x, dtype=promote_scalar(like.node.dtype, x, dt.default_float()))
    return tensor(x)


def broadcast_shapes(*shapes: Sequence[int], op: str = "broadcast", loc: str | None = None
                     ) -> tuple[int, ...]:
    ndim = builtins.max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, d in enumerate(s):
            j = ndim - len(s) + i
            if d != 1:
                if out[j] not in (1, d):
                    dim = j - ndim
                    _fail(op, "shapes " + " and ".join(str(list(x)) for x in shapes) +
                          f" cannot be broadcast (dim {dim}: {out[j]} vs {d})", loc)
                out[j] = d
    return tuple(out)


def broadcast_node(node: Node, shape: tuple[int, ...], loc: str | None) -> Node:
    if node.shape == shape:
        return node
    if node.op == "const":
        return ops.const(node.attrs[0], shape, node.dtype, loc)
    lead = len(shape) - len(node.shape)
    node = ops.reshape(node, (1,) * lead + node.shape, loc)
    return ops.expand(node, shape, loc)


def _result_dtype(a: TensorLike, b: TensorLike) -> str:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        # a 0-d tensor does not lift the category of a dimensioned one (as in torch)
        if a.ndim == 0 and b.ndim > 0 and _cat(a) <= _cat(b):
            return b.node.dtype
        if b.ndim == 0 and a.ndim > 0 and _cat(b) <= _cat(a):
            return a.node.dtype
        return promote(a.node.dtype, b.node.dtype)
    if isinstance(a, Tensor):
        return promote_scalar(a.node.dtype, b, dt.default_float())
    return promote_scalar(b.node.dtype, a, dt.default_float())  # type: ignore[union-attr]


def _cat(t: Tensor) -> int:
    return 0 if t.node.dtype == "bool" else 1 if t.node.dtype.startswith("int") else 2


def _operand(x: TensorLike, shape: tuple[int, ...], dtype: str, loc: str | None) -> Node:
    if isinstance(x, Tensor):
        return broadcast_node(ops.cast(node_of(x), dtype, loc), shape, loc)
    runtime = getattr(x, "__fusegrad_scalar__", None)
    if runtime is not None:
        # a Python number backed by a 0-d tensor (optimizer hyperparameters): a runtime input
        return broadcast_node(ops.cast(node_of(runtime), dtype, loc), shape, loc)
    if not isinstance(x, (int, float, bool, np.number, np.bool_)):
        raise TypeError(with_location(f"unsupported operand type {type(x).__name__}", loc))
    return ops.const(x.item() if isinstance(x, np.generic) else x, shape, dtype, loc)


def binary(op: str, a: TensorLike, b: TensorLike, loc: str | None = None,
           dtype: str | None = None) -> Tensor:
    """Broadcast ``a`` and ``b``, promote them to a common dtype and apply primitive ``op``."""
    loc = loc or user_location()
    if dtype is None and isinstance(a, Tensor):
        # the common cases, without broadcasting or promotion to work out: two tensors of one
        # shape and dtype, a float tensor and a Python number
        na = a.node
        if isinstance(b, Tensor):
            if b.node.shape == na.shape and b.node.dtype == na.dtype:
                return wrap(ops.binary(op, node_of(a), node_of(b), loc), a, b)
        elif type(b) in (float, int) and is_float(na.dtype):
            return wrap(ops.binary(op, node_of(a), ops.const(b, na.shape, na.dtype, loc), loc), a)
    name = {"sub": "sub", "div": "div"}.get(op, op)
    shape = broadcast_shapes(_shape(a), _shape(b), op=name, loc=loc)
    common = dtype or _result_dtype(a, b)
    node = ops.binary(op, _operand(a, shape, common, loc), _operand(b, shape, common, loc), loc)
    return wrap(node, a, b)


def _shape(x: TensorLike) -> tuple[int, ...]:
    return x.node.shape if isinstance(x, Tensor) else ()


def unary(op: str, x: Tensor, loc: str | None = None) -> Tensor:
    loc = loc or user_location()
    n = node_of(x)
    if n.dtype not in TABLE[op].accepts:  # a float-only op promotes integers and bools
        n = ops.cast(n, dt.default_float(), loc)
    return wrap(ops.unary(op, n, loc), x)


def _float_node(x: Tensor, loc: str | None) -> Node:
    n = node_of(x)
    return n if is_float(n.dtype) else ops.cast(n, dt.default_float(), loc)


# ---------------------------------------------------------------------------- arithmetic
def add(a: TensorLike, b: TensorLike, alpha: Scalar = 1) -> Tensor:
    loc = user_location()
    if alpha != 1:
        b = binary("mul", b, alpha, loc)
    return binary("add", a, b, loc)


def sub(a: TensorLike, b: TensorLike, alpha: Scalar = 1) -> Tensor:
    loc = user_location()
    if alpha != 1:
        b = binary("mul", b, alpha, loc)
    return binary("sub", a, b, loc)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    return binary("mul", a, b, user_location())


def div(a: TensorLike, b: TensorLike, rounding_mode: str | None = None) -> Tensor:
    loc = user_location()
    common = _result_dtype(a, b)
    if rounding_mode is not None:
        from .functions_ext import div_rounded  # the module builds on this one
        return div_rounded(a, b, rounding_mode)
    if not is_float(common):
        common = dt.default_float()
    return binary("div", a, b, loc, dtype=common)


def pow(a: TensorLike, b: TensorLike) -> Tensor:  # noqa: A001 - torch.pow
    loc = user_location()
    common = _result_dtype(a, b)
    if not is_float(common):
        _fail("pow", "integer powers are not supported; use a float tensor", loc, DTypeError)
    return binary("pow", a, b, loc)


def neg(x: Tensor) -> Tensor:
    if x.node.dtype == "bool":
        _fail("neg", "negation of a bool tensor is not supported, use logical_not", user_location(),
              DTypeError)
    return unary("neg", x)


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return unary("abs", x)


def exp(x: Tensor) -> Tensor:
    return unary("exp", x)


def log(x: Tensor) -> Tensor:
    return unary("log", x)


def sqrt(x: Tensor) -> Tensor:
    return unary("sqrt", x)


def rsqrt(x: Tensor) -> Tensor:
    loc = user_location()
    return wrap(ops.unary("recip", ops.unary("sqrt", _float_node(x, loc), loc), loc), x)


def reciprocal(x: Tensor) -> Tensor:
    return unary("recip", x)


def sin(x: Tensor) -> Tensor:
    return unary("sin", x)


def cos(x: Tensor) -> Tensor:
    return unary("cos", x)


def tanh(x: Tensor) -> Tensor:
    return unary("tanh", x)


def square(x: Tensor) -> Tensor:
    return binary("mul", x, x, user_location())


def sigmoid(x: Tensor) -> Tensor:
    """1/(1+e^-x), evaluated so that neither branch overflows (finite values and gradients)."""
    loc = user_location()
    n = _float_node(x, loc)
    e = ops.unary("exp", ops.unary("neg", ops.unary("abs", n, loc), loc), loc)
    one = ops.const(1.0, n.shape, n.dtype, loc)
    denom = ops.binary("add", one, e, loc)
    pos = ops.unary("recip", denom, loc)
    neg_ = ops.binary("div", e, denom, loc)
    nonneg = ops.binary("le", ops.const(0.0, n.shape, n.dtype, loc), n, loc)
    return wrap(ops.where(nonneg, pos, neg_, loc), x)


def relu(x: Tensor) -> Tensor:
    loc = user_location()
    n = node_of(x)
    zero = ops.const(0, n.shape, n.dtype, loc)
    # x <= 0 -> 0: NaN stays NaN (as in torch) and the gradient at 0 is 0
    return wrap(ops.where(ops.binary("le", n, zero, loc), zero, n, loc), x)


def clamp(x: Tensor, min: Scalar | Tensor | None = None,  # noqa: A002
          max: Scalar | Tensor | None = None) -> Tensor:  # noqa: A002
    loc = user_location()
    if min is None and max is None:
        _fail("clamp", "at least one of min and max must be given", loc, ValueError)
    out = x
    if min is not None:
        out = where(binary("lt", out, min, loc), min, out)
    if max is not None:
        out = where(binary("lt", max, out, loc), max, out)
    return out


clip = clamp


def maximum(a: Tensor, b: Tensor) -> Tensor:
    return binary("maximum", a, b, user_location())


def minimum(a: Tensor, b: Tensor) -> Tensor:
    return binary("minimum", a, b, user_location())


def where(cond: Tensor, a: TensorLike, b: TensorLike) -> Tensor:
    """Elements of ``a`` where ``cond`` holds, else of ``b`` (both broadcast with ``cond``)."""
    loc = user_location()
    if not isinstance(cond, Tensor) or cond.node.dtype != "bool":
        _fail("where", "condition must be a bool tensor", loc, DTypeError)
    shape = broadcast_shapes(cond.node.shape, _shape(a), _shape(b), op="where", loc=loc)
    common = _result_dtype(a, b) if isinstance(a, Tensor) or isinstance(b, Tensor) else \
        promote_scalar("bool", a) if not isinstance(a, float) else dt.default_float()
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        common = dt.default_float() if builtins.any(isinstance(v, float) for v in (a, b)) else \
            "int64" if builtins.any(isinstance(v, int) and not isinstance(v, bool)
                                    for v in (a, b)) else "bool"
    node = ops.where(broadcast_node(node_of(cond), shape, loc), _operand(a, shape, common, loc),
                     _operand(b, shape, common, loc), loc)
    return wrap(node, a, b)


def _compare(op: str, a: TensorLike, b: TensorLike, swap: bool = False) -> Tensor:
    loc = user_location()
    return binary(op, b, a, loc) if swap else binary(op, a, b, loc)


def lt(a, b):
    return _compare("lt", a, b)


def le(a, b):
    return _compare("le", a, b)


def gt(a, b):
    return _compare("lt", a, b, swap=True)


def ge(a, b):
    return _compare("le", a, b, swap=True)


def eq(a, b):
    return _compare("eq", a, b)


def ne(a, b):
    return _compare("ne", a, b)


def logical_not(x: Tensor) -> Tensor:
    loc = user_location()
    n = node_of(x)
    return wrap(ops.binary("eq", ops.cast(n, "bool", loc), ops.const(False, n.shape, "bool", loc),
                           loc))


def logical_and(a: Tensor, b: Tensor) -> Tensor:
    loc = user_location()
    return where(to_bool(a, loc), to_bool(b, loc), False)


def logical_or(a: Tensor, b: Tensor) -> Tensor:
    loc = user_location()
    return where(to_bool(a, loc), True, to_bool(b, loc))


def to_bool(x: Tensor, loc: str | None) -> Tensor:
    return x if x.node.dtype == "bool" else Tensor._from_node(ops.cast(node_of(x), "bool", loc))


def sign(x: Tensor) -> Tensor:
    loc = user_location()
    n = node_of(x)
    zero, one = ops.const(0, n.shape, n.dtype, loc), ops.const(1, n.shape, n.dtype, loc)
    minus_one = ops.const(-1, n.shape, n.dtype, loc)
    out = ops.where(ops.binary("lt", zero, n, loc), one,
                    ops.where(ops.binary("lt", n, zero, loc), minus_one, zero, loc), loc)
    return wrap(out, x)  # requires grad like torch's (its gradient is zero)


# ---------------------------------------------------------------------------- casts
def to_dtype(x: Tensor, dtype: Any) -> Tensor:
    name = dt.resolve(dtype)
    if name == x.node.dtype:
        return x
    loc = user_location()
    node = ops.cast(node_of(x), name, loc)
    return wrap(node, x) if is_float(name) else Tensor._from_node(node)


# ---------------------------------------------------------------------------- reductions
def _dims(dim: int | Sequence[int] | None, ndim: int, op: str) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        return tuple(range(ndim))
    if ndim == 0:
        for d in dims:
            _norm_dim(d, 0, op)
        return ()
    return tuple(sorted({_norm_dim(d, ndim, op) for d in dims}))


def _squeeze_dims(node: Node, dims: tuple[int, ...], keepdim: bool, loc: str | None) -> Node:
    if keepdim:
        return node
    shape = tuple(d for i, d in enumerate(node.shape) if i not in dims)
    return ops.reshape(node, shape, loc)


def sum(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False,  # noqa: A001
        dtype: Any = None) -> Tensor:
    loc = user_location()
    dims = _dims(dim, x.ndim, "sum")
    n = node_of(x)
    out_dt = dt.resolve(dtype) if dtype is not None else \
        ("int64" if not is_float(n.dtype) else n.dtype)
    n = ops.cast(n, out_dt, loc)
    node = ops.reduce("sum", n, dims, loc) if dims else n
    return wrap(_squeeze_dims(node, dims, keepdim, loc), x)


def mean(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False,
         dtype: Any = None) -> Tensor:
    loc = user_location()
    n = node_of(x)
    if dtype is not None:
        n = ops.cast(n, dt.resolve(dtype), loc)
    if not is_float(n.dtype):
        _fail("mean", f"could not infer output dtype: input dtype must be floating point, got "
              f"{n.dtype}", loc, DTypeError)
    dims = _dims(dim, x.ndim, "mean")
    count = math.prod(x.node.shape[d] for d in dims)
    s = ops.reduce("sum", n, dims, loc) if dims else n
    node = ops.binary("div", s, ops.const(float(count) if count else float("nan"), s.shape,
                                          s.dtype, loc), loc)
    return wrap(_squeeze_dims(node, dims, keepdim, loc), x)


def var(x: Tensor, dim: int | Sequence[int] | None = None, unbiased: bool | None = None,
        keepdim: bool = False, correction: int | None = None) -> Tensor:
    loc = user_location()
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    dims = _dims(dim, x.ndim, "var")
    n = _float_node(x, loc)
    count = math.prod(x.node.shape[d] for d in dims)
    s = ops.reduce("sum", n, dims, loc) if dims else n
    m = ops.binary("div", s, ops.const(float(count), s.shape, s.dtype, loc), loc)
    d = ops.binary("sub", n, ops.expand(m, n.shape, loc), loc)
    ss = ops.reduce("sum", ops.binary("mul", d, d, loc), dims, loc) if dims else \
        ops.binary("mul", d, d, loc)
    denom = builtins.max(count - correction, 0)
    node = ops.binary("div", ss, ops.const(float(denom) if denom else float("nan"), ss.shape,
                                           ss.dtype, loc), loc)
    return wrap(_squeeze_dims(node, dims, keepdim, loc), x)


def std(x: Tensor, dim: int | Sequence[int] | None = None, unbiased: bool | None = None,
        keepdim: bool = False, correction: int | None = None) -> Tensor:
    v = var(x, dim, unbiased, keepdim, correction)
    loc = user_location()
    n = v.node
    # torch's gradient is 0 where the std is 0 (sqrt's own would be 0 * inf = nan): take the
    # sqrt of 1 there, so neither branch of the where carries a nan back
    zero = ops.binary("eq", n, ops.const(0.0, n.shape, n.dtype, loc), loc)
    root = ops.unary("sqrt", ops.where(zero, ops.const(1.0, n.shape, n.dtype, loc), n, loc), loc)
    return wrap(ops.where(zero, ops.const(0.0, n.shape, n.dtype, loc), root, loc), v)


MaxMin = namedtuple("MaxMin", ["values", "indices"])


def _check_nonempty(op: str, x: Tensor, dims: tuple[int, ...], loc: str | None) -> None:
    if builtins.any(x.node.shape[d] == 0 for d in dims) or (not dims and x.node.size == 0):
        _fail(op, f"cannot reduce over an empty dim of shape {list(x.node.shape)}", loc,
              IndexError)


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    loc = user_location()
    n = node_of(x)
    if dim is None:
        _check_nonempty("argmax", x, (), loc)
        flat = ops.reshape(n, (x.node.size,), loc)
        out = ops.argmax(flat, 0, loc)
        return Tensor._from_node(ops.reshape(out, (1,) * x.ndim if keepdim else (), loc))
    d = _norm_dim(dim, x.ndim, "argmax")
    if x.ndim == 0:
        return Tensor._from_node(ops.const(0, (), "int64", loc))
    _check_nonempty("argmax", x, (d,), loc)
    return Tensor._from_node(_squeeze_dims(ops.argmax(n, d, loc), (d,), keepdim, loc))


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return argmax(_negate_for_order(x), dim, keepdim)


def _negate_for_order(x: Tensor) -> Tensor:
    if x.node.dtype == "bool":
        return logical_not(x)
    return Tensor._from_node(ops.unary("neg", node_of(x)))


def amax(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    loc = user_location()
    dims = _dims(dim, x.ndim, "amax")
    _check_nonempty("amax", x, dims, loc)
    n = node_of(x)
    node = ops.reduce("max", n, dims, loc) if dims else n
    return wrap(_squeeze_dims(node, dims, keepdim, loc), x)


def amin(x: Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
    return neg(amax(neg(x), dim, keepdim))


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """``max(x)``: the largest element; ``max(x, dim)``: (values, indices); ``max(a, b)``."""
    if isinstance(dim, Tensor):
        return maximum(x, dim)
    if dim is None:
        return amax(x)
    return _max_with_indices(x, dim, keepdim)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    if isinstance(dim, Tensor):
        return minimum(x, dim)
    if dim is None:
        return amin(x)
    values, indices = _max_with_indices(_negate_for_order(x) if not x.requires_grad else neg(x),
                                        dim, keepdim)
    return MaxMin(gather_along(x, dim, indices, keepdim), indices)


def _max_with_indices(x: Tensor, dim: int, keepdim: bool) -> MaxMin:
    indices = argmax(x, dim, keepdim)
    return MaxMin(gather_along(x, dim, indices, keepdim), indices)


def gather_along(x: Tensor, dim: int, indices: Tensor, keepdim: bool) -> Tensor:
    """The elements of ``x`` at ``indices`` along ``dim`` (the gradient goes to those only)."""
    if x.ndim == 0:
        return x
    d = _norm_dim(dim, x.ndim)
    idx = indices if keepdim else unsqueeze(indices, d)
    out = gather(x, d, idx)
    return out if keepdim else squeeze(out, d)


# ---------------------------------------------------------------------------- movement
def _shape_arg(shape: tuple) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    loc = user_location()
    shape = tuple(int(s) for s in _shape_arg(shape))
    size = x.node.size
    if shape.count(-1) > 1:
        _fail("view", "only one dimension can be inferred", loc)
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            _fail("view", f"shape {list(shape)} is invalid for input of size {size}", loc)
        shape = tuple(size // known if s == -1 else s for s in shape)
    if math.prod(shape) != size or builtins.any(s < 0 for s in shape):
        _fail("view", f"shape {list(shape)} is invalid for input of size {size} "
              f"(input shape {list(x.node.shape)})", loc)
    return wrap(ops.reshape(node_of(x), shape, loc), x)


view = reshape


def permute(x: Tensor, *dims: Any) -> Tensor:
    loc = user_location()
    dims = _shape_arg(dims)
    if len(dims) != x.ndim:
        _fail("permute", f"number of dims {len(dims)} does not match the input's "
              f"{x.ndim} (shape {list(x.node.shape)})", loc)
    perm = tuple(_norm_dim(d, x.ndim, "permute") for d in dims)
    return wrap(ops.permute(node_of(x), perm, loc), x)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    if x.ndim == 0:
        return x
    d0, d1 = _norm_dim(dim0, x.ndim, "transpose"), _norm_dim(dim1, x.ndim, "transpose")
    perm = list(range(x.ndim))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return wrap(ops.permute(node_of(x), tuple(perm), user_location()), x)


def t(x: Tensor) -> Tensor:
    if x.ndim > 2:
        _fail("t", f"expects a tensor with <= 2 dims, got shape {list(x.node.shape)}",
              user_location())
    return transpose(x, 0, 1) if x.ndim == 2 else x


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    d = _norm_dim(dim, x.ndim + 1, "unsqueeze")
    shape = x.node.shape[:d] + (1,) + x.node.shape[d:]
    return wrap(ops.reshape(node_of(x), shape, user_location()), x)


def squeeze(x: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    if dim is None:
        dims = tuple(i for i, s in enumerate(x.node.shape) if s == 1)
    else:
        dims = tuple(i for i in _dims(dim, x.ndim, "squeeze") if x.node.shape[i] == 1)
    shape = tuple(s for i, s in enumerate(x.node.shape) if i not in dims)
    return wrap(ops.reshape(node_of(x), shape, user_location()), x)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = _norm_dim(start_dim, x.ndim, "flatten"), _norm_dim(end_dim, x.ndim, "flatten")
    shape = x.node.shape[:s] + (math.prod(x.node.shape[s:e + 1]),) + x.node.shape[e + 1:]
    return wrap(ops.reshape(node_of(x), shape, user_location()), x)


def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    d = _norm_dim(dim, x.ndim, "unflatten")
    return reshape(x, x.node.shape[:d] + tuple(sizes) + x.node.shape[d + 1:])


def expand(x: Tensor, *sizes: Any) -> Tensor:
    loc = user_location()
    sizes = _shape_arg(sizes)
    if len(sizes) < x.ndim:
        _fail("expand", f"the number of sizes {len(sizes)} must be >= the number of dims "
              f"{x.ndim} (shape {list(x.node.shape)})", loc)
    lead = len(sizes) - x.ndim
    shape = tuple(x.node.shape[i - lead] if s == -1 and i >= lead else s
                  for i, s in enumerate(sizes))
    for i in range(x.ndim):
        if x.node.shape[i] not in (1, shape[lead + i]):
            _fail("expand", f"the expanded size {shape[lead + i]} must match the existing size "
                  f"{x.node.shape[i]} at non-singleton dim {i}; target sizes {list(sizes)}, "
                  f"tensor shape {list(x.node.shape)}", loc)
    return wrap(broadcast_node(node_of(x), shape, loc), x)


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return expand(x, other.node.shape)


def broadcast_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    return expand(x, tuple(shape))


def repeat(x: Tensor, *sizes: Any) -> Tensor:
    sizes = _shape_arg(sizes)
    lead = len(sizes) - x.ndim
    base = reshape(x, (1,) * lead + x.node.shape)
    inter = []
    for r, s in zip(sizes, base.node.shape):
        inter += [r, s]
    y = reshape(base, tuple(v for pair in zip((1,) * len(sizes), base.node.shape)
                            for v in pair))
    y = expand(y, tuple(inter))
    return reshape(y, tuple(r * s for r, s in zip(sizes, base.node.shape)))


def contiguous(x: Tensor) -> Tensor:
    return x


def clone(x: Tensor) -> Tensor:
    """A copy with storage of its own (a realized value is copied now; a pending one is computed
    into a new buffer when realized); gradients flow back to ``x``."""
    node = node_of(x)
    # inside a compiled function's trace the copy is of each call's value, not a constant
    if node.op == "buffer" and node.attrs[0].data is not None and capture.active() is None:
        from ..ir.buffer import Buffer
        buf = node.attrs[0]
        copy = Buffer(buf.shape, buf.dtype, copy_array(buf.data))
        grad = x.requires_grad and is_grad_enabled()
        if grad:
            copy.source = node  # autograd reaches x through the copy
        out = Tensor._from_node(ops.buffer(copy), requires_grad=grad)
        out._is_leaf = not grad
        return out
    return wrap(node, x)


def detach(x: Tensor) -> Tensor:
    """``x``'s value cut from autograd, sharing ``x``'s storage as torch's does: an in-place
    update of ``x`` made later (``load_state_dict``, an optimizer step) shows through it, even
    when ``x`` still holds a pending update of its own when it is detached."""
    from .tensor import _detached
    home = x._storage_node()
    if home is not None and x.node.op != "buffer":
        # x's pending value goes into ``home`` when realized; until then readers of the alias
        # get that value through ``node_of``, as for any pending write to a shared storage
        return Tensor._from_node(_detached(home), False)
    return Tensor._from_node(_detached(x.node), False)


def detached_node(x: Tensor) -> Node:
    """``x``'s own value (pending or not) cut from autograd, for ``Tensor.detach_``."""
    from .tensor import _detached
    return _detached(x.node)


def slice_dim(x: Tensor, dim: int, start: int, stop: int, step: int = 1,
              loc: str | None = None) -> Tensor:
    """``x`` narrowed to ``start:stop:step`` along ``dim`` (normalised like Python slicing)."""
    d = _norm_dim(dim, x.ndim, "slice")
    size = x.node.shape[d]
    start, stop, step = slice(start, stop, step).indices(size)
    loc = loc or user_location()
    if step <= 0:
        _fail("slice", f"step must be positive, got {step}", loc, ValueError)
    stop = builtins.max(stop, start)
    ranges = tuple((start, stop, step) if i == d else (0, s, 1)
                   for i, s in enumerate(x.node.shape))
    return wrap(ops.slice_(node_of(x), ranges, loc), x)


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    return slice_dim(x, dim, start, start + length)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along ``dim``: each input is padded into place and the pieces are added."""
    loc = user_location()
    tensors = [t for t in tensors]
    if not tensors:
        _fail("cat", "expected a non-empty list of Tensors", loc, ValueError)
    ref = builtins.max(tensors, key=lambda t: t.ndim)
    d = _norm_dim(dim, ref.ndim, "cat")
    parts = [t for t in tensors if not (t.ndim == 1 and t.node.size == 0)]
    for t in parts:
        if t.ndim != ref.ndim or builtins.any(
                a != b for i, (a, b) in enumerate(zip(t.node.shape, ref.node.shape)) if i != d):
            _fail("cat", "sizes of tensors must match except in dimension "
                  f"{d}; got shapes " + ", ".join(str(list(p.node.shape)) for p in tensors), loc)
    common = tensors[0].node.dtype
    for t in tensors[1:]:
        common = promote(common, t.node.dtype)
    if parts:
        acc = ops.pads_sum([ops.cast(node_of(t), common, loc) for t in parts], d, loc)
    else:
        acc = ops.const(0, ref.node.shape[:d] + (0,) + ref.node.shape[d + 1:], common, loc)
    return wrap(acc, *tensors)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    loc = user_location()
    tensors = list(tensors)
    if not tensors:
        _fail("stack", "expected a non-empty list of Tensors", loc, ValueError)
    for t in tensors[1:]:
        if t.node.shape != tensors[0].node.shape:
            _fail("stack", "expects each tensor to be equal size, got " +
                  ", ".join(str(list(x.node.shape)) for x in tensors), loc)
    d = _norm_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0
          ) -> tuple[Tensor, ...]:
    d = _norm_dim(dim, x.ndim, "split")
    size = x.node.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = [builtins.min(step, size - i) for i in range(0, size, step)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != size:
            _fail("split", f"sizes {sizes} do not sum to {size} (dim {d} of "
                  f"{list(x.node.shape)})", user_location())
    out, start, loc = [], 0, user_location()
    for s in sizes:
        out.append(slice_dim(x, d, start, start + s, 1, loc))
        start += s
    return tuple(out)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    d = _norm_dim(dim, x.ndim, "chunk")
    if chunks <= 0:
        _fail("chunk", f"expects `chunks` to be greater than 0, got: {chunks}", user_location(),
              RuntimeError)
    size = x.node.shape[d]
    if size == 0:  # torch gives ``chunks`` empty pieces of an empty dim
        return tuple(slice_dim(x, d, 0, 0) for _ in range(chunks))
    return split(x, -(-size // chunks), d)


def unbind(x: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    d = _norm_dim(dim, x.ndim, "unbind")
    return tuple(squeeze(s, d) for s in split(x, 1, d))


# ---------------------------------------------------------------------------- linear algebra
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with numpy/torch semantics for 1-D, 2-D and batched operands."""
    loc = user_location()
    if a.ndim == 0 or b.ndim == 0:
        _fail("matmul", f"both arguments need at least 1 dim, got shapes {list(a.node.shape)} "
              f"and {list(b.node.shape)}", loc)
    check_same_dtype("matmul", (("the first operand", a), ("the second", b)), loc,
                     "; convert one of them with .to(dtype)")
    if not is_float(a.node.dtype):
        _fail("matmul", f"needs float tensors, got {a.node.dtype}", loc, DTypeError)
    na, nb = node_of(a), node_of(b)
    if len(na.shape) == 2 == len(nb.shape) and na.shape[1] == nb.shape[0]:
        return wrap(ops.matmul(na, nb, loc), a, b)
    a_shape = (1,) + na.shape if a.ndim == 1 else na.shape
    b_shape = nb.shape + (1,) if b.ndim == 1 else nb.shape
    if a_shape[-1] != b_shape[-2]:
        _fail("matmul", f"shapes {list(a.node.shape)} and {list(b.node.shape)} cannot be "
              f"multiplied ({a_shape[-2]}x{a_shape[-1]} and {b_shape[-2]}x{b_shape[-1]})", loc)
    na, nb = ops.reshape(na, a_shape, loc), ops.reshape(nb, b_shape, loc)
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2], op="matmul", loc=loc)
    m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
    if len(b_shape) == 2:
        # (..., M, K) @ (K, N): one 2-D product over the flattened leading dims
        flat = ops.reshape(na, (math.prod(a_shape[:-1]), k), loc)
        out = ops.reshape(ops.matmul(flat, nb, loc), batch + (m, n), loc)
    else:
        bsz = math.prod(batch)
        a3 = ops.reshape(broadcast_node(na, batch + (m, k), loc), (bsz, m, k), loc)
        b3 = ops.reshape(broadcast_node(nb, batch + (k, n), loc), (bsz, k, n), loc)
        out = ops.reshape(ops.matmul(a3, b3, loc), batch + (m, n), loc)
    final = batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())
    return wrap(ops.reshape(out, final, loc), a, b)


def affine(x: Tensor, weight: Tensor, bias: Tensor | None, loc: str | None) -> Tensor:
    """``x @ weight.T + bias`` for an ``x`` of at least one dim, a 2-D ``weight`` and a 1-D
    ``bias`` of one dtype (checked by the caller): the graph of ``matmul(x, t(weight)) + bias``
    without its intermediate tensors (``nn.Linear``'s path). The leading dims of ``x`` are
    flattened into the rows of one product, as ``matmul`` does, and the bias is added to that
    product before it takes them back: a reshape the caller then makes (a language model's
    ``logits.reshape(-1, vocab)``) cancels, and the add fuses with what reads the rows
    (attn's log-softmax over (1024, 10000) read a separate (16, 64, 10000) bias kernel's
    output before)."""
    nx = node_of(x)
    lead = nx.shape[:-1]
    if len(lead) != 1:
        nx = ops.reshape(nx, (math.prod(lead), nx.shape[-1]), loc)
    node = ops.matmul(nx, ops.permute(node_of(weight), (1, 0), loc), loc)
    if bias is not None:
        node = ops.binary("add", node, broadcast_node(node_of(bias), node.shape, loc), loc)
    if len(lead) != 1:
        node = ops.reshape(node, lead + (node.shape[-1],), loc)
    return wrap(node, x, weight, bias)


def mm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 2 or b.ndim != 2:
        _fail("mm", f"expects 2-D tensors, got shapes {list(a.node.shape)} and "
              f"{list(b.node.shape)}", user_location())
    return matmul(a, b)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 3 or b.ndim != 3 or a.node.shape[0] != b.node.shape[0]:
        _fail("bmm", f"expects 3-D tensors with equal batch, got shapes {list(a.node.shape)} "
              f"and {list(b.node.shape)}", user_location())
    return matmul(a, b)


# ---------------------------------------------------------------------------- softmax
def softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    loc = user_location()
    d = _norm_dim(dim, x.ndim, "softmax")
    n = _float_node(x, loc) if dtype is None else ops.cast(node_of(x), dt.resolve(dtype), loc)
    if n.size == 0:  # nothing to normalise: an empty result of the same shape, as in torch
        return wrap(n, x)
    n = ops.reshape(n, (1,), loc) if x.ndim == 0 else n  # a 0-d input is a one-element row
    m = ops.expand(ops.unary("detach", ops.reduce("max", n, (d,), loc), loc), n.shape, loc)
    e = ops.unary("exp", ops.binary("sub", n, m, loc), loc)
    s = ops.expand(ops.reduce("sum", e, (d,), loc), n.shape, loc)
    return wrap(ops.reshape(ops.binary("div", e, s, loc), x.node.shape, loc), x)


def log_softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    loc = user_location()
    d = _norm_dim(dim, x.ndim, "log_softmax")
    n = _float_node(x, loc) if dtype is None else ops.cast(node_of(x), dt.resolve(dtype), loc)
    if n.size == 0:
        return wrap(n, x)
    n = ops.reshape(n, (1,), loc) if x.ndim == 0 else n  # a 0-d input is a one-element row
    m = ops.expand(ops.unary("detach", ops.reduce("max", n, (d,), loc), loc), n.shape, loc)
    shifted = ops.binary("sub", n, m, loc)
    lse = ops.unary("log", ops.reduce("sum", ops.unary("exp", shifted, loc), (d,), loc), loc)
    out = ops.binary("sub", shifted, ops.expand(lse, n.shape, loc), loc)
    return wrap(ops.reshape(out, x.node.shape, loc), x)


def logsumexp(x: Tensor, dim: int | Sequence[int], keepdim: bool = False) -> Tensor:
    loc = user_location()
    dims = _dims(dim, x.ndim, "logsumexp")
    n = _float_node(x, loc)
    if builtins.any(n.shape[d] == 0 for d in dims):
        # an empty sum is 0 and its log -inf, as in torch; there is no max to shift by
        out = ops.unary("log", ops.reduce("sum", ops.unary("exp", n, loc), dims, loc), loc)
        return wrap(_squeeze_dims(out, dims, keepdim, loc), x)
    m = ops.unary("detach", ops.reduce("max", n, dims, loc), loc)
    # an all -inf slice would give inf - inf; shift by 0 there instead
    finite = ops.binary("eq", ops.unary("abs", m, loc), ops.const(math.inf, m.shape, m.dtype, loc),
                        loc)
    m = ops.where(finite, ops.const(0.0, m.shape, m.dtype, loc), m, loc)
    e = ops.unary("exp", ops.binary("sub", n, ops.expand(m, n.shape, loc), loc), loc)
    out = ops.binary("add", ops.unary("log", ops.reduce("sum", e, dims, loc), loc), m, loc)
    return wrap(_squeeze_dims(out, dims, keepdim, loc), x)


# ---------------------------------------------------------------------------- indexing
def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """torch.gather: ``out[i][j] = x[index[i][j]][j]`` for dim 0 (index may be smaller)."""
    loc = user_location()
    d = _norm_dim(dim, x.ndim, "gather")
    if index.ndim != x.ndim:
        _fail("gather", f"index {list(index.node.shape)} and input {list(x.node.shape)} must "
              "have the same number of dims", loc)
    for i, (a, b) in enumerate(zip(index.node.shape, x.node.shape)):
        if i != d and a > b:
            _fail("gather", f"index {list(index.node.shape)} is larger than input "
                  f"{list(x.node.shape)} at dim {i}", loc)
    _check_index_range("gather", index, x.node.shape[d], d, loc)
    n = node_of(x)
    ranges = tuple((0, index.node.shape[i] if i != d else s, 1) for i, s in enumerate(n.shape))
    n = ops.slice_(n, ranges, loc)
    return wrap(ops.gather(n, node_of(index), d, loc), x)


def _check_index_range(op: str, index: Tensor, size: int, dim: int, loc: str | None) -> None:
    if index.node.dtype not in ("int32", "int64"):
        _fail(op, f"index must be an integer tensor, got {index.node.dtype}", loc, DTypeError)
    def check(arr: np.ndarray) -> None:
        arr = to_host(arr)   # a GPU tensor's indices: one copy to the host
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -size or hi >= size:
            bad = lo if lo < -size else hi
            raise IndexError(with_location(f"{op}: index {bad} is out of bounds for dim {dim} "
                                           f"with size {size}", loc))
    if index.node.size:
        capture.check_values(index, check)


def take_along_dim(x: Tensor, index: Tensor, dim: int) -> Tensor:
    return gather(x, dim, index)


def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    return _take(x, _norm_dim(dim, x.ndim, "index_select"), index, user_location())


def _take(x: Tensor, d: int, index: Tensor, loc: str | None) -> Tensor:
    """numpy.take along ``d``: the dim is replaced by ``index``'s dims; negative indices wrap."""
    size = x.node.shape[d]
    _check_index_range("index", index, size, d, loc)
    pre, post = x.node.shape[:d], x.node.shape[d + 1:]
    p, q, k = math.prod(pre), math.prod(post), index.node.size
    idx = ops.cast(node_of(index), "int64", loc)
    data = index.node.attrs[0].data if index.node.op == "buffer" else None
    if not (index.node.size and data is not None and not is_device_array(data)
            and int(data.min()) >= 0):
        zero = ops.const(0, idx.shape, "int64", loc)
        idx = ops.where(ops.binary("lt", idx, zero, loc),
                        ops.binary("add", idx, ops.const(size, idx.shape, "int64", loc), loc),
                        idx, loc)
    idx3 = ops.expand(ops.reshape(idx, (1, k, 1), loc), (p, k, q), loc)
    x3 = ops.reshape(node_of(x), (p, size, q), loc)
    out = ops.gather(x3, idx3, 1, loc)
    return wrap(ops.reshape(out, pre + index.node.shape + post, loc), x)


def _index_tensor(item: Any) -> Tensor | None:
    if isinstance(item, Tensor):
        return item
    if isinstance(item, (list, np.ndarray)):
        from .creation import tensor
        return tensor(np.asarray(item))
    return None


def _eager_index(x: Tensor, key: Any) -> Tensor | None:
    """``x[key]`` computed now with numpy, as a new leaf, when ``x`` holds a value that no
    gradient flows to and no compiled function is tracing; None where the graph must do it.

    Which rows a batch takes is then data, not constants of a graph: a loop that indexes or
    slices its dataset batch by batch reuses one program instead of compiling one per batch.
    """
    if x.node.op != "buffer" or capture._active or (x.requires_grad and is_grad_enabled()) \
            or x.is_cuda:  # numpy indexes host memory only: on the GPU the graph does it
        return None
    items = []
    for it in key if isinstance(key, tuple) else (key,):
        if it is None or it is Ellipsis or isinstance(it, (bool, int, np.integer)):
            items.append(it)
        elif isinstance(it, slice):
            if not builtins.all(v is None or isinstance(v, (int, np.integer))
                                for v in (it.start, it.stop, it.step)) or \
                    (it.step is not None and it.step <= 0):
                return None   # the graph path takes tensor bounds, and explains bad steps
            items.append(it)
        elif isinstance(it, Tensor) and it.node.op == "buffer" and \
                it.node.dtype in ("int32", "int64") and not it.requires_grad:
            items.append(it.node.attrs[0].numpy())
        elif isinstance(it, (list, np.ndarray)) and np.asarray(it).dtype.kind in "iu":
            items.append(np.asarray(it))
        else:
            return None
    try:
        value = x.node.attrs[0].numpy()[tuple(items)]
    except IndexError:
        return None   # the graph path raises it with the op, the shapes and the user's line
    return Tensor(np.array(value))


def _is_bool_scalar(item: Any) -> bool:
    return isinstance(item, bool)  # torch refuses numpy's bool, as an unsupported index type


def _is_real_index(item: Any) -> bool:
    """Whether an index item selects along an existing dim (not None, ``...`` or a bool)."""
    return item is not None and item is not Ellipsis and not _is_bool_scalar(item)


def getitem(x: Tensor, key: Any) -> Tensor:
    """Indexing with ints, slices, None, Ellipsis and integer tensors (numpy/torch rules)."""
    eager = _eager_index(x, key)
    if eager is not None:
        return eager
    loc = user_location()
    items = list(key) if isinstance(key, tuple) else [key]
    n_real = builtins.sum(1 for it in items if _is_real_index(it))
    if builtins.sum(1 for it in items if it is Ellipsis) > 1:
        _fail("index", "an index can only have a single ellipsis", loc, IndexError)
    if n_real > x.ndim:
        _fail("index", f"too many indices for tensor of dimension {x.ndim} "
              f"(shape {list(x.node.shape)})", loc, IndexError)
    ell = [i for i, it in enumerate(items) if it is Ellipsis]
    if ell:
        i = ell[0]
        items = items[:i] + [slice(None)] * (x.ndim - n_real) + items[i + 1:]
    else:
        items += [slice(None)] * (x.ndim - n_real)
    out = x
    dim = 0  # the dim of ``out`` the next item applies to
    tensor_dims: list[tuple[int, Tensor]] = []
    squeeze_dims: list[int] = []
    # A bool adds a dim of size 1 (True) or 0 (False). It is an advanced index (torch, numpy):
    # alone it is a plain new dim; with other advanced indices the index shapes broadcast.
    bools_advanced = builtins.any(_is_bool_scalar(it) for it in items) and builtins.sum(
        1 for it in items if _is_bool_scalar(it) or isinstance(it, (Tensor, list, np.ndarray))) > 1
    for it in items:
        if it is None or _is_bool_scalar(it):
            out = unsqueeze(out, dim)
            if bools_advanced and it is not None:
                from .creation import tensor
                tensor_dims.append((dim, tensor([0] if it else [], dtype="int64")))
            elif it is False:
                out = slice_dim(out, dim, 0, 0)
            dim += 1
            continue
        t = _index_tensor(it)
        if t is not None:
            if t.node.dtype == "bool":
                _fail("index", "boolean mask indexing has a data-dependent shape and is not "
                      "supported; keep the shape with where(mask, x, 0) or x.masked_fill(~mask, "
                      "0) and reduce (a masked mean: (x * mask).sum() / mask.sum()), or index "
                      "x.numpy() outside fusegrad.compile", loc, IndexError)
            tensor_dims.append((dim, t))
            dim += 1
            continue
        size = out.node.shape[dim]
        if isinstance(it, slice):
            start, stop, step = it.indices(size)
            if step <= 0:
                _fail("index", "step must be greater than zero", loc, ValueError)
            if (start, stop, step) != (0, size, 1):  # a whole dim is kept as it is
                out = slice_dim(out, dim, start, builtins.max(stop, start), step, loc)
            dim += 1
        elif isinstance(it, (int, np.integer)) or (isinstance(it, Tensor)):
            i = int(it)
            if not -size <= i < size:
                _fail("index", f"index {i} is out of bounds for dimension {dim} with size {size}",
                      loc, IndexError)
            out = slice_dim(out, dim, i % size, i % size + 1, 1, loc)
            squeeze_dims.append(dim)
            dim += 1
        else:
            _fail("index", f"unsupported index type {type(it).__name__}", loc, IndexError)
    if tensor_dims:
        out = _advanced(out, tensor_dims, squeeze_dims, loc)
    elif squeeze_dims:
        out = squeeze(out, squeeze_dims)
    return out if out is not x else wrap(node_of(x), x)  # x[:] is a new tensor, as in torch


def _advanced(x: Tensor, tensor_dims: list[tuple[int, Tensor]], squeeze_dims: list[int],
              loc: str | None) -> Tensor:
    dims = [d for d, _ in tensor_dims]
    if dims != list(range(dims[0], dims[0] + len(dims))):
        _fail("index", "integer tensor indices must be on adjacent dims", loc, IndexError)
    shape = broadcast_shapes(*(t.node.shape for _, t in tensor_dims), op="index", loc=loc)
    flat_index: Tensor | None = None
    for d, t in tensor_dims:
        size = x.node.shape[d]
        _check_index_range("index", t, size, d, loc)
        if x.is_cuda and not t.is_cuda:
            t = t.to(x.device)  # as torch: host index tensors may index a GPU tensor
        ti = to_dtype(t, "int64")
        ti = where(lt(ti, 0), ti + size, ti)
        flat_index = ti if flat_index is None else flat_index * size + ti
    lo, hi = dims[0], dims[-1] + 1
    merged = math.prod(x.node.shape[lo:hi])
    xm = reshape(x, x.node.shape[:lo] + (merged,) + x.node.shape[hi:])
    idx = expand(flat_index, shape) if flat_index.node.shape != shape else flat_index
    out = _take(xm, lo, idx, loc)
    # int indices on other dims were kept as size-1 dims; drop them (they sit outside lo..hi)
    keep = [d if d < lo else d - (hi - lo) + len(shape) for d in squeeze_dims]
    return squeeze(out, keep) if keep else out


def setitem(x: Tensor, key: Any, value: TensorLike) -> None:
    """``x[key] = value`` for basic indices: recorded as an assignment of the whole tensor."""
    loc = user_location()
    items = list(key) if isinstance(key, tuple) else [key]
    if isinstance(key, Tensor) and key.node.dtype == "bool":
        _set_masked(x, key, value, loc)
        return
    if builtins.any(_index_tensor(it) is not None for it in items):
        _fail("setitem", "assignment through tensor indices is not supported yet", loc,
              IndexError)
    # Build the region as a slice of x, then place value there with pad + a mask.
    region = getitem(Tensor._from_node(x.node), key)
    val = value if isinstance(value, Tensor) else None
    vnode = _operand(value if val is None else val, region.node.shape, x.node.dtype, loc) \
        if val is None else broadcast_node(ops.cast(node_of(val), x.node.dtype, loc),
                                           broadcast_shapes(region.node.shape, val.node.shape,
                                                            op="setitem", loc=loc), loc)
    if vnode.shape != region.node.shape:
        _fail("setitem", f"value of shape {list(vnode.shape)} cannot be assigned to a region of "
              f"shape {list(region.node.shape)}", loc)
    if builtins.any(it is False for it in items):
        return  # x[False] selects nothing: nothing to write
    placement, full = _placement(x.node.shape, items)
    vnode = ops.reshape(vnode, full, loc)
    mask = ops.pad(ops.const(True, full, "bool", loc), x.node.shape, placement, loc)
    new = ops.where(mask, ops.pad(vnode, x.node.shape, placement, loc), node_of(x), loc)
    x._assign(new, val is not None and val.requires_grad)


def _set_masked(x: Tensor, mask: Tensor, value: TensorLike, loc: str | None) -> None:
    """``x[mask] = value`` for a number or a one-element value: ``x.masked_fill_(mask, value)``
    (a value per selected element would need their count, which depends on the data)."""
    from .functions_ext import masked_fill
    if isinstance(value, Tensor) and value.node.size != 1:
        _fail("setitem", f"x[mask] = value needs a number or a one-element value, got shape "
              f"{list(value.node.shape)} (the number of selected elements depends on the data); "
              "use x = where(mask, values, x) with values of x's shape", loc, IndexError)
    if isinstance(value, Tensor):
        value = reshape(value, ())
    out = masked_fill(x, mask, value)
    x._assign(out.node, out.requires_grad)


def _placement(shape: tuple[int, ...], items: list[Any]) -> tuple[tuple, tuple]:
    n_real = builtins.sum(1 for it in items if _is_real_index(it))
    ell = [i for i, it in enumerate(items) if it is Ellipsis]
    if ell:
        i = ell[0]
        items = items[:i] + [slice(None)] * (len(shape) - n_real) + items[i + 1:]
    items = [it for it in items if it is not None and not _is_bool_scalar(it)]
    items += [slice(None)] * (len(shape) - n_real)
    placement, full = [], []
    for it, size in zip(items, shape):
        if isinstance(it, slice):
            start, stop, step = it.indices(size)
            placement.append((start, step))
            full.append(len(range(start, stop, step)))
        else:
            i = int(it) % size
            placement.append((i, 1))
            full.append(1)
    return tuple(placement), tuple(full)


# ---------------------------------------------------------------------------- misc
def one_hot(index: Tensor, num_classes: int = -1) -> Tensor:
    loc = user_location()
    if num_classes < 0:
        num_classes = int(index.detach().numpy().max()) + 1
    _check_index_range("one_hot", index, num_classes, -1, loc)
    n = ops.cast(node_of(index), "int64", loc)
    shape = n.shape + (num_classes,)
    classes = ops.buffer(_arange_buffer(num_classes), loc)
    cls = ops.expand(ops.reshape(classes, (1,) * len(n.shape) + (num_classes,), loc), shape, loc)
    idx = ops.expand(ops.reshape(n, n.shape + (1,), loc), shape, loc)
    return Tensor._from_node(ops.cast(ops.binary("eq", idx, cls, loc), "int64", loc))


# The same buffer for the same n keeps the graphs that read it structurally equal (one program).
_arange_cache: LRUCache[int, Any] = LRUCache(64)


def _arange_buffer(n: int):
    from ..ir.buffer import Buffer
    buf = _arange_cache.get(n)
    if buf is None:
        buf = _arange_cache[n] = Buffer.from_array(np.arange(n, dtype=np.int64))
        buf.any_device = True
    return buf


def isclose_all(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    return bool(np.allclose(a.detach().numpy(), b.detach().numpy(), rtol=rtol, atol=atol))


allclose = isclose_all
