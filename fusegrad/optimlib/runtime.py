"""Python numbers that the tracer reads as runtime inputs: optimizer hyperparameters.

``optimizer.param_groups[i]['lr']`` returns a :class:`RuntimeFloat` (a ``float`` subclass; an
``int`` learning rate gives a :class:`RuntimeInt`). It is the same number in every Python sense —
printing, comparisons, hashing, json, ``math``, numpy, pickling and copying (which give a plain
``float``/``int``) — and it carries ``__fusegrad_scalar__``: a 0-d float64 tensor holding the
number, which the tracer uses as an input of the graph instead of baking the number into it as
a constant (``fusegrad.tracer.functions._operand``). Hence a custom optimizer written as in
torch, ``p.add_(d_p, alpha=-group['lr'])``, compiles one program whatever the learning rate.

Arithmetic with plain numbers (``-lr``, ``lr * k``, ``k * lr``, ``lr / k``, ``1 - lr``,
``lr ** 2``, ``abs(lr)``) keeps the result runtime. Which tensor backs a number depends on when
it is used:

- eagerly, a fresh 0-d buffer holding the number, made when a tensor op first reads it. Lazy
  updates keep reading the value they were built with even if ``param_groups`` changes before
  they are realized (a buffer refreshed in place would leak the new value into them).
- while ``fusegrad.compile`` traces a function, a number read from ``param_groups`` inside the
  trace is backed by the optimizer's 0-d scalar for that option (``Optimizer.scalar``), which
  the replay hook refreshes from ``param_groups`` before every replay; arithmetic on it is
  recorded as tensor ops on that scalar, so a replay recomputes ``-lr`` from the new ``lr``.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..tracer import state as tracer_state
from ..tracer.tensor import Tensor


def _const_tensor(value: float) -> Tensor:
    """A fresh 0-d float64 buffer holding ``value`` (a runtime input that never changes)."""
    return tracer_state.scalar_tensor(value, "float64")


class _RuntimeNumber:
    """What RuntimeFloat and RuntimeInt share: the tensor behind the number and arithmetic."""

    _trace: Any
    _make: Callable[[], Tensor] | None
    _tensor: Tensor | None

    def _init(self, trace: Any = None, make: Callable[[], Tensor] | None = None) -> None:
        self._trace = trace if make is not None else None
        self._make = make
        self._tensor = None

    @property
    def __fusegrad_scalar__(self) -> Tensor:
        """The 0-d tensor whose value the tracer reads in place of this number."""
        if self._make is not None and self._trace is not None \
                and tracer_state.current_trace() is self._trace:
            if self._tensor is None:
                self._tensor = self._make()
            return self._tensor
        # eager use, or use outside the trace that recorded it: a buffer fixed to the value
        const = self.__dict__.get("_const")
        if const is None:
            const = self.__dict__["_const"] = _const_tensor(float(self))
        return const

    # ------------------------------------------------------------------ copying and pickling
    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (self._plain_type, (self._plain_type(self),))

    def __reduce__(self) -> tuple:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        return self._plain_type(self)

    def __deepcopy__(self, memo: Any) -> Any:
        return self._plain_type(self)

    # ------------------------------------------------------------------ arithmetic
    def _result(self, value: Any, other: Any, fn: Callable[..., Tensor]) -> Any:
        """``value`` (the plain result), runtime when it is a number."""
        if type(value) is float:
            cls: type = RuntimeFloat
        elif type(value) is int:
            cls = RuntimeInt
        else:
            return value
        trace = tracer_state.current_trace()
        make = None
        if trace is not None and any(isinstance(x, _RuntimeNumber) and x._trace is trace
                                     for x in (self, other)):
            def make() -> Tensor:
                return fn(_operand(self), _operand(other))
        return cls(value, trace, make)


def _operand(x: Any) -> Any:
    return x.__fusegrad_scalar__ if isinstance(x, _RuntimeNumber) else x


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, Tensor)


def _binary(name: str, fn: Callable[[Any, Any], Any], reflected: bool) -> Callable:
    def method(self, other, *mod):
        if mod or not _is_number(other):
            return getattr(self._plain_type, name)(self, other, *mod)
        value = getattr(self._plain_type, name)(self, other)
        if value is NotImplemented:
            return value
        if reflected:
            return self._result(value, other, lambda a, b: fn(b, a))
        return self._result(value, other, fn)
    method.__name__ = name
    return method


def _unary(name: str, fn: Callable[[Any], Any]) -> Callable:
    def method(self):
        return self._result(getattr(self._plain_type, name)(self), None, lambda a, _: fn(a))
    method.__name__ = name
    return method


_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
           "truediv": operator.truediv, "pow": operator.pow}
_UNARY = {"__neg__": operator.neg, "__pos__": lambda t: t, "__abs__": lambda t: t.abs()}


def _install(cls: type) -> type:
    for name, fn in _BINARY.items():
        setattr(cls, f"__{name}__", _binary(f"__{name}__", fn, False))
        setattr(cls, f"__r{name}__", _binary(f"__r{name}__", fn, True))
    for name, fn in _UNARY.items():
        setattr(cls, name, _unary(name, fn))
    return cls


@_install
class RuntimeFloat(_RuntimeNumber, float):
    """A ``float`` that fusegrad's tracer reads as a runtime input (see the module docstring).

    Args:
        value: the number.
        trace: the ``fusegrad.compile`` trace ``make`` belongs to (None: eager).
        make: builds the tensor holding the number inside that trace.
    """

    _plain_type = float

    def __new__(cls, value: Any, trace: Any = None, make: Callable[[], Tensor] | None = None):
        self = float.__new__(cls, value)
        self._init(trace, make)
        return self

    def __getnewargs__(self) -> tuple:
        return (float(self),)


@_install
class RuntimeInt(_RuntimeNumber, int):
    """An ``int`` hyperparameter (``lr=1``) read as a runtime input, like :class:`RuntimeFloat`."""

    _plain_type = int

    def __new__(cls, value: Any, trace: Any = None, make: Callable[[], Tensor] | None = None):
        self = int.__new__(cls, value)
        self._init(trace, make)
        return self

    def __getnewargs__(self) -> tuple:
        return (int(self),)


def plain(value: Any) -> Any:
    """``value`` without runtime wrappers (also inside a tuple or list)."""
    if isinstance(value, _RuntimeNumber):
        return value._plain_type(value)
    if type(value) in (tuple, list) and any(isinstance(v, _RuntimeNumber) for v in value):
        return type(value)(plain(v) for v in value)
    return value
