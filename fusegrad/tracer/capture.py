"""The state of a ``fusegrad.compile`` trace in progress, consulted by the tracer's hooks.

While a compiled function's body runs for the first time, values cannot be read back into
Python, realization is deferred to the end of the trace, and mutations of tensors from outside
the function are checked.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from ..ir.buffer import Buffer
from ..ir.errors import CaptureError, with_location
from .provenance import user_location


@dataclass
class Trace:
    """What one trace saw: its start, the argument buffers, modules, grads and mutations."""

    start: int                                   # Buffer.mark() when the trace began
    arg_buffers: dict[int, int]                  # id(root Buffer) -> flat argument index
    arg_aliases: list[tuple[int, int]] = field(default_factory=list)  # arguments sharing memory
    seq_start: int = 0                           # Tensor.seq below it: bound before the trace
    replaced: list[str] = field(default_factory=list)  # module attributes the body replaced
    state_created: bool = False                  # a custom optimizer created state in the body
    backward: bool = False                       # the body accumulated gradients
    grad_cleared: dict[int, Any] = field(default_factory=dict)  # leaves whose grad it set
    grad_seen: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # read: (leaf, grad)
    modules: dict[int, Any] = field(default_factory=dict)            # id -> Module
    replay_hooks: dict[Any, Any] = field(default_factory=dict)       # key -> run per call
    input_checks: dict[Any, tuple[Buffer, Any]] = field(default_factory=dict)  # (buffer, check)

    def existed_before(self, buf: Buffer) -> bool:
        return buf.root().serial < self.start


_active: list[Trace] = []


def active() -> Trace | None:
    return _active[-1] if _active else None


def push(trace: Trace) -> None:
    _active.append(trace)


def pop() -> None:
    _active.pop()


def refuse(what: str) -> None:
    """Raise the error for an operation that cannot be captured (when a trace is running)."""
    if _active:
        raise CaptureError(with_location(f"{what} inside a compiled function cannot be captured: "
                                         "its result would be frozen into the compiled program",
                                         user_location()))


# How many times a module's training mode has been set: a replay re-reads the modes it was
# traced with only after a change (a model of hundreds of modules would cost microseconds).
MODES_SET = [0]


def modes_changed() -> None:
    """Record that some module's ``training`` was set (``Module.train``, ``.training = ...``)."""
    MODES_SET[0] += 1


# How many times a module's parameter, buffer or submodule was replaced by another object, or an
# optimizer's state was loaded: compiled functions forget their traces after a change (a replay
# would read and update the objects it was traced with).
STRUCTURE_SET = [0]


class Retrace(Exception):
    """Raised by a replay hook: this entry can no longer replay (what its program was built
    from changed), so the compiled function drops it and traces the call again."""


# Tensors that compiled entries read or update, weakly, and the compiled functions holding them:
# replacing one of them by another object makes those functions trace again.
_HELD: dict[int, tuple[Any, "weakref.WeakSet[Any]"]] = {}


def hold(tensor: Any, owner: Any) -> None:
    """Note that a compiled entry of ``owner`` (a compiled function) reads or updates
    ``tensor`` through a weak reference."""
    key = id(tensor)
    held = _HELD.get(key)
    if held is None or held[0]() is not tensor:
        def gone(ref: Any, key: int = key) -> None:
            if _HELD.get(key, (None,))[0] is ref:
                del _HELD[key]
        held = _HELD[key] = (weakref.ref(tensor, gone), weakref.WeakSet())
    held[1].add(owner)


def _holders(tensor: Any) -> list[Any]:
    held = _HELD.get(id(tensor))
    return list(held[1]) if held is not None and held[0]() is tensor else []


def replaced(old: Any, what: str) -> None:
    """``old`` (a tensor or module) was replaced by another object in a module or optimizer
    state. Inside a trace, the traced body did it (it cannot be replayed). The compiled
    functions holding ``old`` (or a tensor of the module ``old``) forget their entries."""
    if _active:
        _active[-1].replaced.append(what)
    tensors = [old] if not hasattr(old, "modules") else \
        [t for m in old.modules() for t in (*m._parameters.values(), *m._buffers.values())]
    for t in tensors:
        if t is not None:
            for owner in _holders(t):
                owner.forget()


def structure_changed(what: str = "") -> None:
    """Record that tensors a compiled function may hold were replaced by other objects. While a
    trace runs, the traced body is what replaces them: it cannot be replayed (``what`` says
    what it replaced, for the warning)."""
    if _active:
        _active[-1].replaced.append(what)
    else:
        STRUCTURE_SET[0] += 1


def note_grad_read(leaf: Any) -> None:
    """The body read ``leaf.grad``: a replay reads the leaf's grad of its own call (an optimizer
    step compiled on its own reads grads a backward outside made), and needs it to be None, or
    not, as it was when traced."""
    trace = _active[-1]
    if id(leaf) in trace.grad_cleared or id(leaf) in trace.grad_seen:
        return
    # the grad is kept alive until the trace is recorded (zero_grad may drop it)
    trace.grad_seen[id(leaf)] = (weakref.ref(leaf), leaf._grad)


def note_state_created() -> None:
    """The body created state it branched on not having (a custom optimizer's first step, a
    buffer made lazily): the next call, with the state, is traced again."""
    if _active:
        _active[-1].state_created = True


def note_module(module: Any) -> None:
    if _active:
        _active[-1].modules[id(module)] = module


def add_replay_hook(key: Any, hook: Any) -> None:
    """Run ``hook()`` before every replay of the trace being recorded (e.g. to refresh the
    optimizer's hyperparameter buffers from ``param_groups``)."""
    if _active:
        _active[-1].replay_hooks.setdefault(key, hook)


def check_values(tensor: Any, check: Any, key: Any = None) -> None:
    """Run ``check(flat_array)`` on ``tensor``'s value now (when it is computed) and, inside a
    compile trace, on every later call's value of the argument it came from (e.g. class indices
    that must be in range: the replayed program cannot look at them)."""
    node = tensor.node
    if node.op != "buffer" or node.attrs[0].data is None:
        return
    check(node.attrs[0].data)
    if _active:  # the same check asked twice (cross_entropy, then nll_loss) runs once
        root = node.attrs[0].root()
        key = (id(root), key) if key is not None else object()
        _active[-1].input_checks.setdefault(key, (root, check))


_STATE: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def mark_state(tensor: Any) -> Any:
    """Declare ``tensor`` as state a compiled function may update in place (parameters,
    module buffers, optimizer state, gradients)."""
    _STATE[id(tensor)] = tensor
    return tensor


def is_state(tensor: Any) -> bool:
    return _STATE.get(id(tensor)) is tensor
