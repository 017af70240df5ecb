"""The error types the IR raises, defined in the leaf module :mod:`fusegrad.errors`."""
from __future__ import annotations

from ..errors import CaptureError, DTypeError, FusegradError, ShapeError, with_location

__all__ = ["CaptureError", "DTypeError", "FusegradError", "ShapeError", "with_location"]
