"""Gradient mode: ``no_grad`` / ``enable_grad`` as context managers and decorators."""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode: bool) -> None:
    _state.enabled = bool(mode)


class _GradMode:
    mode: bool

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        set_grad_enabled(self.mode)

    def __exit__(self, *exc: Any) -> None:
        set_grad_enabled(self.prev)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Ops traced inside record no gradient (like ``torch.no_grad``)."""

    mode = False


class enable_grad(_GradMode):
    mode = True


class inference_mode(_GradMode):
    """``torch.inference_mode``: as ``no_grad`` here (nothing traced inside records gradients);
    ``inference_mode(False)`` changes nothing. A context manager and a decorator, used as
    ``@inference_mode``, ``@inference_mode()`` or ``@inference_mode(False)``.

    torch's inference tensors (refusing later autograd use) have no counterpart: tensors made
    inside are ordinary tensors that do not require grad.
    """

    def __new__(cls, mode: bool | Callable = True) -> Any:
        self = super().__new__(cls)
        if callable(mode):  # bare @inference_mode: return the wrapped function
            self.__init__()
            return self(mode)
        return self

    def __init__(self, mode: bool = True) -> None:
        self.enabled = bool(mode)

    def __enter__(self) -> None:
        self.prev = is_grad_enabled(), is_inference_mode_enabled()
        if self.enabled:
            set_grad_enabled(False)
        _state.inference = self.enabled

    def __exit__(self, *exc: Any) -> None:
        set_grad_enabled(self.prev[0])
        _state.inference = self.prev[1]

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with inference_mode(self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def is_inference_mode_enabled() -> bool:
    return getattr(_state, "inference", False)
