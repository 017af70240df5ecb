"""What layers (``nnlib``) and optimizers (``optimlib``) need of the tracer, beyond the Tensor API.

Parameters, module buffers and optimizer state are tensors that keep one buffer for their
lifetime: an in-place update (``p.add_(u)``, ``buf.mul_(m)``) is realized as an ``assign`` into
that buffer. ``fusegrad.compile`` replays programs that read and write those buffers, so it needs
to know which tensors are such state and when the objects holding them change; this module is
the one place where layers and optimizers tell it.

- State: :func:`mark_state`, :func:`is_state`, :func:`share_storage`, :func:`make_leaf`.
- Runtime scalars (hyperparameters read as program inputs, not graph constants):
  :func:`scalar_tensor`, :func:`set_scalar`.
- Compile traces: :func:`tracing`, :func:`current_trace`, :func:`note_module`, :func:`modes_changed`,
  :func:`replaced`, :func:`structure_changed`, :func:`note_state_created`,
  :func:`add_replay_hook`, :class:`Retrace`, :func:`note_python_state_changed`.
- :func:`realize`: compute tensors now (an optimizer step realizes its updates together).
- :func:`replayed`: a function the library itself traces once and replays (an optimizer's
  update outside ``fusegrad.compile``).
- :func:`register_post_backward_hook`: run a function after every ``backward()`` (data-parallel
  training averages the gradients there).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.buffer import Buffer
from . import capture
from .capture import (Retrace, add_replay_hook, mark_state, modes_changed, note_module,  # noqa: F401
                      note_state_created, replaced, structure_changed)
from .autograd import POST_BACKWARD
from .realize import realize  # noqa: F401
from .tensor import Tensor, _detached

__all__ = ["Retrace", "add_replay_hook", "current_trace", "is_state", "make_leaf", "mark_state",
           "modes_changed", "note_module", "register_post_backward_hook", "note_python_state_changed", "note_state_created", "realize",
           "replaced", "replayed", "scalar_tensor", "set_scalar", "share_storage", "structure_changed",
           "tracing"]


def is_state(tensor: Tensor) -> bool:
    """Whether ``tensor`` was declared with :func:`mark_state`."""
    return capture.is_state(tensor)


def replayed(fn: Callable[[], Any]) -> Any:
    """``fn`` (no arguments), compiled as ``fusegrad.compile`` compiles, but warning of nothing:
    the user did not ask for it. Its ``misses`` count the calls that traced it again."""
    from .compile import CompiledFunction
    return CompiledFunction(fn, quiet=True)


def tracing() -> bool:
    """Whether a ``fusegrad.compile`` trace is running (its body is being recorded)."""
    return capture.active() is not None


def current_trace() -> Any:
    """The running ``fusegrad.compile`` trace (an opaque token compared by identity), or None."""
    return capture.active()


def note_python_state_changed(what: str) -> None:
    """Inside a trace, the body changed a Python value a replay would not change again (a step
    count kept as a number): the function is not replayed. Outside a trace, nothing."""
    trace = capture.active()
    if trace is not None:
        trace.replaced.append(what)


def share_storage(tensor: Tensor, source: Tensor) -> None:
    """Make ``tensor`` hold ``source``'s value without autograd history, sharing its storage
    (``nn.Parameter(t)``, ``module.to(dtype)``): a realized source's buffer is shared, so
    in-place updates of either are seen by both, as in torch."""
    tensor._bind(_detached(source.node))


def make_leaf(tensor: Tensor, requires_grad: bool) -> None:
    """Set up ``tensor`` (made with :func:`share_storage`, without ``Tensor.__init__``) as a
    leaf with no gradient, requiring grad if asked."""
    tensor._grad = None
    tensor._is_leaf = True
    tensor._version = 0
    tensor._retains_grad = False
    tensor._data_of = None
    tensor._graph_freed = False
    tensor.requires_grad = False
    if requires_grad:
        tensor.requires_grad_(True)


def move_storage(tensor: Tensor, target: Any) -> None:
    """Move ``tensor``'s storage to device ``target`` in place (``Module.to(device)``): the
    tensor keeps its identity and its buffer."""
    from .device import check_device
    from .transfer import move_storage as move
    move(tensor, check_device(target))


def scalar_tensor(value: float, dtype: str) -> Tensor:
    """A 0-d tensor of ``dtype`` holding ``value`` in a buffer of its own: a runtime input of
    every program that reads it, so changing it with :func:`set_scalar` changes no graph."""
    return Tensor._from_node(ops.buffer(Buffer((), dtype, np.array([value], dtype=dtype))))


def set_scalar(tensor: Tensor, value: float) -> bool:
    """Write ``value`` into the buffer of ``tensor`` (made by :func:`scalar_tensor`); True if
    the stored bits changed. Programs read it on their next run, replays included."""
    data = tensor.node.attrs[0].data
    new = np.array([value], dtype=data.dtype)
    if data.tobytes() == new.tobytes():
        return False
    data[0] = new[0]
    return True



_HOOK_KEYS = itertools.count()


class HookHandle:
    """What :func:`register_post_backward_hook` returns: ``remove()`` unregisters the hook."""

    def __init__(self, key: int):
        self.key = key

    def remove(self) -> None:
        POST_BACKWARD.pop(self.key, None)


def register_post_backward_hook(hook: Callable[[list[Tensor]], None]) -> HookHandle:
    """Call ``hook(leaves)`` after every ``backward()``, with the leaves it accumulated
    gradients into (inside a compile trace too: what the hook computes joins the program)."""
    key = next(_HOOK_KEYS)
    POST_BACKWARD[key] = hook
    return HookHandle(key)
