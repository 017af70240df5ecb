"""Tensor methods and operators, bound to the functions in ``functions``."""
from __future__ import annotations

from typing import Any

from ..ir import ops
from ..ir.node import Node
from . import capture, creation
from . import dtype as dt
from . import functions as F
from . import functions_ext as FX
from .autograd import RETAINED, backward
from . import transfer
from .device import check_device
from .grad_mode import is_grad_enabled, no_grad
from .primitives import FUNCTIONS as PRIMITIVES
from .rng import generator
from .tensor import Tensor


def _inplace(fn):
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result = fn(self, *args, **kwargs)
        return self._assign(result.node, result.requires_grad)
    method.__name__ = fn.__name__ + "_"
    return method


def _to(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``: ``self`` when nothing
    changes, else a new tensor (see ``transfer.to_device`` for moves)."""
    dtype = kwargs.get("dtype")
    target = None
    for a in args:
        if isinstance(a, Tensor):
            dtype, target = a.dtype, a.device
        elif isinstance(a, dt.dtype) or a in (float, int, bool):
            dtype = a
        else:
            target = check_device(a)
    if kwargs.get("device") is not None:
        target = check_device(kwargs["device"])
    out = F.to_dtype(self, dtype) if dtype is not None else self
    return transfer.to_device(out, target) if target is not None else out


def _uniform_(self: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    capture.refuse("Tensor.uniform_()")
    arr = generator().uniform(a, b, self.node.shape).astype(self.node.dtype)
    return _fill_from(self, arr)


def _normal_(self: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    capture.refuse("Tensor.normal_()")
    arr = (generator().standard_normal(self.node.shape) * std + mean).astype(self.node.dtype)
    return _fill_from(self, arr)


def _fill_from(self: Tensor, arr: Any) -> Tensor:
    with no_grad():
        return self._assign(creation.buffer_tensor(arr).node)


def _overwrite(self: Tensor, node: Node, requires_grad: bool) -> Tensor:
    """``self`` now holds ``node`` in full. If ``self`` is part of a graph, the overwritten value
    stays in it with a zero gradient, as in torch: a gradient of 0 that meets an infinite
    derivative upstream (``var`` with no degrees of freedom) gives NaN there, not 0."""
    if self.requires_grad and is_grad_enabled():
        keep = ops.const(True, self.node.shape, "bool")
        node = ops.where(keep, ops.cast(node, self.node.dtype), F.node_of(self))
    return self._assign(node, requires_grad)


def _copy_(self: Tensor, src: Tensor, non_blocking: bool = False) -> Tensor:
    src = F.to_tensor(src)
    if src.device != self.device and not src.requires_grad:
        # as torch: a copy between devices (``load_state_dict`` of a host checkpoint into a
        # model on the GPU); a source that requires grad still raises, the move has no gradient
        src = transfer.to_device(src, self.device)
    node = F.broadcast_node(ops.cast(F.node_of(src), self.node.dtype), self.node.shape, None)
    return _overwrite(self, node, src.requires_grad)


def _fill_(self: Tensor, value: Any) -> Tensor:
    return _overwrite(self, ops.const(value.item() if isinstance(value, Tensor) else value,
                                      self.node.shape, self.node.dtype), False)


def _zero_(self: Tensor) -> Tensor:
    return _fill_(self, 0)


def _type(self: Tensor, dtype: Any = None) -> Any:
    if dtype is None:
        return {"float32": "fusegrad.FloatTensor", "float64": "fusegrad.DoubleTensor",
                "int64": "fusegrad.LongTensor", "int32": "fusegrad.IntTensor",
                "bool": "fusegrad.BoolTensor"}[self.node.dtype]
    return F.to_dtype(self, dtype)


def _detach_(self: Tensor) -> Tensor:
    self._bind(F.detached_node(self))
    self.requires_grad = False
    self._is_leaf = True
    return self


def _retain_grad(self: Tensor) -> None:
    if not self._is_leaf:
        RETAINED[id(self)] = self


def _rsub(self: Tensor, other: Any) -> Tensor:
    return F.sub(other, self)


def _rdiv(self: Tensor, other: Any) -> Tensor:
    return F.div(other, self)


def _rpow(self: Tensor, other: Any) -> Tensor:
    return F.pow(other, self)


def _rmatmul(self: Tensor, other: Tensor) -> Tensor:
    return F.matmul(other, self)


def _invert(self: Tensor) -> Tensor:
    if self.node.dtype != "bool":
        raise TypeError("~ is only supported on bool tensors")
    return F.logical_not(self)


def _cuda(self: Tensor, device: Any = None, non_blocking: bool = False) -> Tensor:
    """A copy on the GPU (``self`` when it is there already)."""
    return transfer.to_device(self, check_device("cuda" if device is None else device))


def _cpu(self: Tensor) -> Tensor:
    """A copy in host memory (``self`` when it is there already)."""
    return transfer.to_device(self, check_device("cpu"))


METHODS: dict[str, Any] = {
    "__add__": F.add, "__radd__": F.add, "__sub__": F.sub, "__rsub__": _rsub,
    "__mul__": F.mul, "__rmul__": F.mul, "__truediv__": F.div, "__rtruediv__": _rdiv,
    "__pow__": F.pow, "__rpow__": _rpow, "__matmul__": F.matmul, "__rmatmul__": _rmatmul,
    "__neg__": F.neg, "__abs__": F.abs, "__invert__": _invert,
    "__lt__": F.lt, "__le__": F.le, "__gt__": F.gt, "__ge__": F.ge, "__eq__": F.eq,
    "__ne__": F.ne, "__and__": F.logical_and, "__or__": F.logical_or,
    "__getitem__": F.getitem, "__setitem__": F.setitem,
    "add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div, "pow": F.pow, "neg": F.neg,
    "abs": F.abs, "rsqrt": F.rsqrt, "sigmoid": F.sigmoid, "relu": F.relu, "clamp": F.clamp,
    "clip": F.clamp, "maximum": F.maximum, "minimum": F.minimum, "square": F.square,
    "reciprocal": F.reciprocal, "sign": F.sign, "where": lambda self, c, o: F.where(c, self, o),
    "lt": F.lt, "le": F.le, "gt": F.gt, "ge": F.ge, "eq": F.eq, "ne": F.ne,
    "logical_not": F.logical_not, "logical_and": F.logical_and, "logical_or": F.logical_or,
    "sum": F.sum, "mean": F.mean, "var": F.var, "std": F.std, "max": F.max, "min": F.min,
    "amax": F.amax, "amin": F.amin, "argmax": F.argmax, "argmin": F.argmin,
    "logsumexp": F.logsumexp, "softmax": F.softmax, "log_softmax": F.log_softmax,
    "matmul": F.matmul, "mm": F.mm, "bmm": F.bmm,
    "reshape": F.reshape, "view": F.view, "permute": F.permute, "transpose": F.transpose,
    "t": F.t, "unsqueeze": F.unsqueeze, "squeeze": F.squeeze, "flatten": F.flatten,
    "unflatten": F.unflatten, "expand": F.expand, "expand_as": F.expand_as,
    "broadcast_to": F.broadcast_to, "repeat": F.repeat, "contiguous": F.contiguous,
    "clone": F.clone, "detach": F.detach, "split": F.split, "chunk": F.chunk,
    "unbind": F.unbind, "narrow": F.narrow, "gather": F.gather,
    "index_select": F.index_select,
    "view_as": lambda self, other: F.reshape(self, other.node.shape),
    "reshape_as": lambda self, other: F.reshape(self, other.node.shape),
    "backward": backward, "to": _to, "type": _type, "cpu": _cpu, "cuda": _cuda,
    "float": lambda self: F.to_dtype(self, "float32"),
    "double": lambda self: F.to_dtype(self, "float64"),
    "long": lambda self: F.to_dtype(self, "int64"), "int": lambda self: F.to_dtype(self, "int32"),
    "bool": lambda self: F.to_dtype(self, "bool"),
    "add_": _inplace(F.add), "sub_": _inplace(F.sub), "mul_": _inplace(F.mul),
    "div_": _inplace(F.div), "pow_": _inplace(F.pow), "clamp_": _inplace(F.clamp),
    "neg_": _inplace(F.neg), "relu_": _inplace(F.relu),
    "__iadd__": _inplace(F.add), "__isub__": _inplace(F.sub), "__imul__": _inplace(F.mul),
    "__itruediv__": _inplace(F.div),
    "zero_": _zero_, "fill_": _fill_, "copy_": _copy_, "uniform_": _uniform_,
    "normal_": _normal_, "detach_": _detach_, "retain_grad": _retain_grad,
}


def _swap(fn: Any) -> Any:
    """The reflected operator: ``other <op> self``."""
    def method(self: Tensor, other: Any) -> Tensor:
        return fn(other, self)
    method.__name__ = fn.__name__
    return method


# the everyday API of issue 12 (functions_ext.py)
EXT_METHODS: dict[str, Any] = {
    "__mod__": FX.remainder, "__rmod__": _swap(FX.remainder),
    "__floordiv__": FX.floor_divide, "__rfloordiv__": _swap(FX.floor_divide),
    "__imod__": _inplace(FX.remainder), "__ifloordiv__": _inplace(FX.floor_divide),
    "remainder": FX.remainder, "fmod": FX.fmod, "floor_divide": FX.floor_divide,
    "remainder_": _inplace(FX.remainder), "fmod_": _inplace(FX.fmod),
    "floor_divide_": _inplace(FX.floor_divide),
    "floor": FX.floor, "ceil": FX.ceil, "trunc": FX.trunc, "round": FX.round, "frac": FX.frac,
    "floor_": _inplace(FX.floor), "ceil_": _inplace(FX.ceil), "trunc_": _inplace(FX.trunc),
    "round_": _inplace(FX.round),
    "triu": FX.triu, "tril": FX.tril, "triu_": _inplace(FX.triu), "tril_": _inplace(FX.tril),
    "masked_fill": FX.masked_fill, "masked_fill_": _inplace(FX.masked_fill),
    "all": FX.all, "any": FX.any,
    "clamp_min": lambda self, min: F.clamp(self, min=min),
    "clamp_max": lambda self, max: F.clamp(self, max=max),
    "cumsum": FX.cumsum, "cumprod": FX.cumprod,
    "cumsum_": _inplace(FX.cumsum), "cumprod_": _inplace(FX.cumprod),
    "flip": FX.flip, "fliplr": FX.fliplr, "flipud": FX.flipud, "roll": FX.roll,
    "repeat_interleave": FX.repeat_interleave,
    "sort": FX.sort, "argsort": FX.argsort, "msort": FX.msort, "topk": FX.topk,
    "addmm": FX.addmm, "baddbmm": FX.baddbmm, "addmv": FX.addmv, "outer": FX.outer,
    "ger": FX.outer, "dot": FX.dot, "norm": FX.norm,
    "log1p": FX.log1p, "expm1": FX.expm1,
    "log1p_": _inplace(FX.log1p), "expm1_": _inplace(FX.expm1),
    "isnan": FX.isnan, "isinf": FX.isinf, "isfinite": FX.isfinite, "isposinf": FX.isposinf,
    "isneginf": FX.isneginf, "nan_to_num": FX.nan_to_num, "nan_to_num_": _inplace(FX.nan_to_num),
    "nonzero": FX.nonzero, "argwhere": FX.argwhere, "masked_select": FX.masked_select,
    "unique": FX.unique,
}


# the op table's user-facing primitives (exp, log, sqrt, sin, cos, tanh, ...), from their rows
PRIMITIVE_METHODS: dict[str, Any] = {
    **PRIMITIVES, **{f"{name}_": _inplace(fn) for name, fn in PRIMITIVES.items()}}


def install() -> None:
    for name, fn in {**METHODS, **EXT_METHODS, **PRIMITIVE_METHODS}.items():
        setattr(Tensor, name, fn)
    Tensor.T = property(lambda self: F.permute(self, *reversed(range(self.ndim))))
    Tensor.mT = property(lambda self: F.transpose(self, -2, -1))
