"""The user's source line for each traced op: the first frame outside the fusegrad package, or,
for a layer that a library container (``Sequential``) called when a training loop called it,
the user's line that built that layer."""
from __future__ import annotations

import functools
import os
import sys
from types import CodeType, FrameType

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# The built-in demo, the benchmark zoo and the training step that `fusegrad dump` runs for a
# user's file are user code of the library: their lines are what `fusegrad dump` should show.
_USER_FILES_IN_PKG = {_PKG_DIR + "demo.py", os.path.join(_PKG_DIR, "bench", "zoo.py"),
                      _PKG_DIR + "dump_target.py"}

# The code object of ``nnlib.Module.__call__`` (registered by nnlib: the tracer does not import
# it). A frame running it holds the module being called as ``self``.
_module_call: list[CodeType | None] = [None]


def register_module_call(code: CodeType) -> None:
    """Tell provenance which code object is ``Module.__call__``."""
    _module_call[0] = code


def user_location() -> str | None:
    """``file:line`` of the user code that made the op being traced (None if there is none).

    That is the innermost caller outside fusegrad, unless that caller is not a model's
    ``forward`` (a training loop calling ``model(x)``) and the op comes from a layer that a
    library module called for it (the ``nn.Linear(...)`` in a ``Sequential(...)``): then the line
    that built the layer (``Module._defined_at``) is the user's model code, and the loop's line
    is not. A module the loop calls itself (``loss_fn(out, y)``) keeps the loop's line, which is
    also where its argument errors belong.
    """
    frame: FrameType | None = sys._getframe(1)
    call = _module_call[0]
    inner_call: FrameType | None = None   # the innermost Module.__call__ frame
    calls = 0
    while frame is not None:
        code = frame.f_code
        user = _IS_USER.get(code)
        if user is None:
            if len(_IS_USER) > _MEMO_SIZE:
                _IS_USER.clear()
                _HERE.clear()
            filename = code.co_filename
            user = _IS_USER[code] = not filename.startswith(_PKG_DIR) or \
                filename in _USER_FILES_IN_PKG
        if user:
            key = (code, frame.f_lineno)
            here = _HERE.get(key)
            if here is None:
                here = _HERE[key] = f"{_short(code.co_filename)}:{key[1]}"
            caller = frame.f_back
            if calls < 2 or (caller is not None and caller.f_code is call):
                return here  # a forward's own line, or a module the user called directly
            return vars(inner_call.f_locals["self"]).get("_defined_at") or here
        if code is call:
            calls += 1
            if inner_call is None:
                inner_call = frame
        frame = frame.f_back
    return None


# Per code object: whether it is user code; per (code, line): its ``file:line`` (every traced op
# asks). Emptied past ``_MEMO_SIZE`` code objects: functions made at run time come and go.
_MEMO_SIZE = 4096
_IS_USER: dict[CodeType, bool] = {}
_HERE: dict[tuple[CodeType, int], str] = {}


@functools.lru_cache(maxsize=1024)
def _short(filename: str) -> str:
    """``filename`` relative to the working directory when it is below it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return rel if not rel.startswith("..") else filename
