"""Creating tensors: from data, filled, ranges and random numbers."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.buffer import Buffer
from . import dtype as dt
from . import capture
from .device import check_device
from .provenance import user_location
from .rng import source
from .tensor import Tensor


def as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """A contiguous numpy array of ``data`` with fusegrad's dtype rules (floats -> float32)."""
    if isinstance(data, Tensor):
        arr = data.detach().numpy()
    elif isinstance(data, (list, tuple)) and data and any(isinstance(d, Tensor) for d in data):
        arr = np.array([as_array(d) for d in data])
    else:
        arr = np.asarray(data)
    # arrays, numpy scalars and tensors keep their dtype; Python numbers get the defaults
    typed = isinstance(data, (np.ndarray, np.generic, Tensor))
    if dtype is not None:
        target = dt.resolve(dtype)
    elif arr.dtype.kind == "f":
        target = dt.default_float() if not typed else arr.dtype.name
        if typed and arr.dtype.name not in ("float32", "float64"):
            target = "float32"
    elif arr.dtype.kind == "b":
        target = "bool"
    elif arr.dtype.kind in "iu":
        target = "int64" if not typed or arr.dtype.name not in ("int32", "int64") else arr.dtype.name
    else:
        raise TypeError(f"cannot make a tensor from {type(data).__name__} of dtype {arr.dtype}")
    # np.require, not np.ascontiguousarray: the latter turns a 0-d array into shape (1,)
    return np.require(arr, dtype=target, requirements="C")


def _sizes(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = tuple(int(s) for s in size)
    if any(s < 0 for s in out):
        raise RuntimeError(f"negative dimension in size {list(out)}")
    return out


def _finish(t: Tensor, requires_grad: bool, device: Any) -> Tensor:
    dev = check_device(device)
    if dev.type == "cuda" and capture.active() is None:
        from .transfer import place
        place(t, dev)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
           ) -> Tensor:
    """A tensor holding a copy of ``data`` (nested lists, scalars or numpy arrays)."""
    return Tensor(as_array(data, dtype).copy(), requires_grad=requires_grad, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    return Tensor(array)


as_tensor = tensor


def full(size: Sequence[int], fill_value: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    shape = _sizes((size,)) if not isinstance(size, int) else (size,)
    if dtype is None:
        name = "bool" if isinstance(fill_value, bool) else \
            "int64" if isinstance(fill_value, int) else dt.default_float()
    else:
        name = dt.resolve(dtype)
    t = Tensor._from_node(ops.const(fill_value, shape, name, user_location()))
    return _finish(t, requires_grad, device)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
          ) -> Tensor:
    return full(_sizes(size), 0.0 if dtype is None else 0, dtype=dtype or dt.default_float(),
                device=device, requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
         ) -> Tensor:
    return full(_sizes(size), 1.0 if dtype is None else 1, dtype=dtype or dt.default_float(),
                device=device, requires_grad=requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
          ) -> Tensor:
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(x: Tensor, dtype: Any) -> tuple[tuple[int, ...], str]:
    return x.node.shape, dt.resolve(dtype) if dtype is not None else x.node.dtype


def _like_device(x: Tensor, device: Any) -> Any:
    """torch's ``*_like``: the device asked for, else ``x``'s."""
    return device if device is not None else x.device


def zeros_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
               ) -> Tensor:
    shape, name = _like(x, dtype)
    return full(shape, 0, dtype=name, device=_like_device(x, device), requires_grad=requires_grad)


def ones_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
              ) -> Tensor:
    shape, name = _like(x, dtype)
    return full(shape, 1, dtype=name, device=_like_device(x, device), requires_grad=requires_grad)


def empty_like(x: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
               ) -> Tensor:
    return zeros_like(x, dtype, device, requires_grad)


def full_like(x: Tensor, fill_value: Any, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    shape, name = _like(x, dtype)
    return full(shape, fill_value, dtype=name, device=_like_device(x, device),
                requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    values = (start, end, step)
    if dtype is None:
        name = "int64" if all(isinstance(v, int) for v in values) else dt.default_float()
    else:
        name = dt.resolve(dtype)
    n = max(0, math.ceil((end - start) / step))
    arr = (start + np.arange(n, dtype=np.float64) * step) if name.startswith("float") else \
        np.arange(start, end, step)
    return _finish(Tensor(arr.astype(name)), requires_grad, device)


def linspace(start: float, end: float, steps: int, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    arr = np.linspace(start, end, steps).astype(dt.resolve(dtype))
    return _finish(Tensor(arr), requires_grad, device)


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    return _finish(Tensor(np.eye(n, m, dtype=dt.resolve(dtype))), requires_grad, device)


def rand(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
         generator: Any = None) -> Tensor:
    """Uniform [0, 1) numbers, drawn from ``generator`` or the one ``manual_seed`` seeds."""
    capture.refuse("fusegrad.rand()")
    name = dt.resolve(dtype)
    arr = source(generator).random(_sizes(size), dtype=np.float64).astype(name)
    return _finish(Tensor(arr), requires_grad, device)


def randn(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
          generator: Any = None) -> Tensor:
    capture.refuse("fusegrad.randn()")
    name = dt.resolve(dtype)
    arr = source(generator).standard_normal(_sizes(size)).astype(name)
    return _finish(Tensor(arr), requires_grad, device)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), dtype: Any = None,
            device: Any = None, generator: Any = None) -> Tensor:
    capture.refuse("fusegrad.randint()")
    if high is None:
        low, high = 0, low
    arr = source(generator).integers(low, high, size=tuple(size)).astype(
        dt.resolve(dtype or "int64"))
    return _finish(Tensor(arr), False, device)


def randperm(n: int, dtype: Any = None, device: Any = None, generator: Any = None) -> Tensor:
    capture.refuse("fusegrad.randperm()")
    return _finish(Tensor(source(generator).permutation(n).astype(dt.resolve(dtype or "int64"))),
                   False, device)


def rand_like(x: Tensor, dtype: Any = None) -> Tensor:
    return rand(x.node.shape, dtype=dtype or x.node.dtype)


def randn_like(x: Tensor, dtype: Any = None) -> Tensor:
    return randn(x.node.shape, dtype=dtype or x.node.dtype)


def uniform_node_tensor(shape: tuple[int, ...], dtype: str) -> Tensor:
    """Lazy uniform numbers from an in-graph ``rand`` node (for dropout masks)."""
    from .rng import next_key
    count = math.prod(shape)
    key = Buffer.from_array(next_key(count))
    key.any_device = True  # a GPU program reads the host key (a fresh one per replay)
    key.rng_count = max(count, 1)  # fusegrad.compile draws a fresh key on every replay
    return Tensor._from_node(ops.rand(ops.buffer(key), shape, dtype, user_location()))


def buffer_tensor(array: np.ndarray) -> Tensor:
    """A computed tensor of ``array``'s values and dtype, sharing its memory when ``array`` is
    C-contiguous (constant tables of layers: causal masks, gate constants)."""
    buf = Buffer.from_array(array)
    buf.any_device = True  # a constant table: a program on any device reads it
    return Tensor._from_node(ops.buffer(buf))
