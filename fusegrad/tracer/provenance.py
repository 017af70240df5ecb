"""The user's source line for each traced op: the first frame outside the fusegrad package."""
from __future__ import annotations

import os
import sys

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# The built-in demo and the benchmark zoo are user code of the library: their lines are what
# `fusegrad dump` should show.
_USER_FILES_IN_PKG = {_PKG_DIR + "demo.py", os.path.join(_PKG_DIR, "bench", "zoo.py")}


def user_location() -> str | None:
    """``file:line`` of the innermost caller outside fusegrad (None if there is none)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PKG_DIR) or filename in _USER_FILES_IN_PKG:
            return f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


_short_cache: dict[str, str] = {}


def _short(filename: str) -> str:
    short = _short_cache.get(filename)
    if short is None:
        try:
            rel = os.path.relpath(filename)
            short = rel if not rel.startswith("..") else filename
        except ValueError:
            short = filename
        _short_cache[filename] = short
    return short
