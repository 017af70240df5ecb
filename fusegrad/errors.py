"""fusegrad's public error types, and ``with_location`` that names the user's source line.

A leaf module: it imports nothing of fusegrad, so every layer (``ir`` included) may use it.
"""
from __future__ import annotations


class FusegradError(Exception):
    """Base class of fusegrad's own errors."""


class ShapeError(FusegradError, ValueError):
    """An op was given shapes it cannot combine."""


class DTypeError(FusegradError, TypeError, RuntimeError):
    """An op was given dtypes it cannot take (a RuntimeError too: torch raises that for
    mismatched dtypes, so ``except RuntimeError`` written for torch catches it)."""


class CaptureError(FusegradError, RuntimeError):
    """Something inside a compiled function cannot be captured."""


class CheckpointError(FusegradError, ValueError):
    """A file that is not a fusegrad checkpoint, or is truncated or damaged."""


class DeviceError(FusegradError, RuntimeError):
    """Tensors on different devices met in one op, or a device cannot hold what was asked."""


class CodegenError(FusegradError):
    """A Kernel does not follow the Schedule contract (ir/schedule.py)."""


def with_location(message: str, loc: str | None) -> str:
    """``message`` followed by the user's ``file:line`` (``loc``) on its own line, if known."""
    return f"{message}\n  at {loc}" if loc else message


__all__ = ["CaptureError", "CheckpointError", "CodegenError", "DTypeError", "DeviceError",
           "FusegradError",
           "ShapeError", "with_location"]
