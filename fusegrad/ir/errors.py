"""Errors raised when an op is traced: they name the op, the shapes and the user's line."""
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


def with_location(message: str, loc: str | None) -> str:
    return f"{message}\n  at {loc}" if loc else message
