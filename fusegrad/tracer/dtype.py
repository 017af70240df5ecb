"""Tensor dtypes as user-facing objects (``fusegrad.float32`` ...), like ``torch.float32``."""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import from_numpy


class dtype:  # noqa: N801 - named like torch.dtype
    """A tensor element type; compares equal to its IR name (``'float32'``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    @property
    def is_floating_point(self) -> bool:
        return self.name.startswith("float")

    @property
    def itemsize(self) -> int:
        return np.dtype(self.name).itemsize

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dtype):
            return self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"fusegrad.{self.name}"


float32 = dtype("float32")
float64 = dtype("float64")
int32 = dtype("int32")
int64 = dtype("int64")
bool_ = dtype("bool")
_BY_NAME = {d.name: d for d in (float32, float64, int32, int64, bool_)}
_default = ["float32"]


def get(name: str) -> dtype:
    return _BY_NAME[name]


def resolve(value: object) -> str:
    """The IR dtype name of ``value``: a dtype, a name, a numpy dtype or a Python type."""
    if value is None:
        return _default[0]
    if isinstance(value, dtype):
        return value.name
    if value is float:
        return _default[0]
    if value is int:
        return "int64"
    if value is bool:
        return "bool"
    if isinstance(value, str) and value in _BY_NAME:
        return value
    name = getattr(value, "name", None)
    if name in ("float32", "float64", "int32", "int64", "bool"):
        return name
    return from_numpy(value)  # type: ignore[arg-type]


def set_default_dtype(d: object) -> None:
    name = resolve(d)
    if not name.startswith("float"):
        raise TypeError(f"default dtype must be a float type, got {name}")
    _default[0] = name


def get_default_dtype() -> dtype:
    return _BY_NAME[_default[0]]


def default_float() -> str:
    return _default[0]
