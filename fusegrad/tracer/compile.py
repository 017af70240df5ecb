"""``fusegrad.compile``: trace a function once per signature, then replay its compiled program.

The first call with a new signature runs the Python body with tracing on: every op, the
backward pass and the optimizer update are recorded, and at the end everything pending is
realized as ONE program. The trace remembers where each input of that program comes from
(an argument, a parameter or other state tensor, a constant, a fresh random key) and which
tensors its outputs update. Later calls with the same signature skip the Python body: they
check the guards, gather the inputs, run the program (which writes parameters and state into
the buffers they keep, ``assign``) and wrap the returned outputs.

What cannot be replayed is refused while tracing, with the user's line: reading values back
into Python (``item``, ``numpy``, ``bool``), in-place updates of tensors that are not
arguments or declared state, eager random numbers.
"""
from __future__ import annotations

import functools
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ir.buffer import Buffer
from ..ir import ops
from ..ir.graph import toposort
from . import capture
from .realize import (Entry, bind_outputs, output_nodes, pending_targets, prepare, realize,
                      run_entry)
from .pytree import flatten, unflatten
from .explain import describe
from .replay import MISS, STALE, write_replay
from .signature import aliases, describe_change, positional_spec, signature
from .tensor import PENDING, Tensor, seq_mark

DEFAULT_CACHE_LIMIT = 8


# ---------------------------------------------------------------------------- one entry
@dataclass(eq=False)  # entries are compared by identity
class CompiledEntry:
    """One traced signature: its program and its replay (see ``replay.py``)."""

    signature: tuple
    program_entry: Entry | None                # None: the function computes nothing
    return_spec: Any
    modules: list[Any]                         # weakrefs to the modules called
    modes: tuple[tuple, ...]                   # their training modes and flags (``_mode``)
    traced_ops: int
    trace_seconds: float = 0.0
    replays: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # inputs and outputs by kind
    replay_source: str = ""
    replay: Callable[[Any], Any] | None = field(default=None, repr=False)
    held: list[Any] = field(default_factory=list)  # weakrefs: replacing one makes it stale


def _mode(module: Any) -> tuple:
    """What a replay checks of a module it was traced with: ``training``, then the values of the
    attributes the module names in ``_replay_flags`` (DistributedDataParallel's sync flag)."""
    return (module.training, *(getattr(module, f) for f in getattr(module, "_replay_flags", ())))


def _unreplayable(trace: capture.Trace, flat: list[Tensor]) -> str:
    """Why the traced body cannot be replayed ('' if it can): it replaced objects that a replay
    would read again, or its backward went through the autograd history of an argument (the
    next call's argument has a history of its own)."""
    if trace.state_created:
        return ""  # reported separately: traced again once, not on every call
    if trace.replaced:
        what = ", ".join(sorted(set(filter(None, trace.replaced)))) or \
            "tensors it reads (module or optimizer state)"
        return (f"the function replaces {what} with a new object on every call, so it runs on "
                "every call; update it in place instead (self.avg.mul_(0.9).add_(...)) to "
                "replay it")
    if trace.backward and any(t.requires_grad and not t._is_leaf for t in flat):
        return ("an argument carries autograd history from outside and the function calls "
                "backward(), so it runs on every call; pass it detached, or call backward() "
                "outside, to replay it")
    return ""


# ---------------------------------------------------------------------------- the API
class CompiledFunction:
    """A function (or a Module's forward) that is traced once per signature and replayed."""

    def __init__(self, fn: Callable[..., Any], cache_limit: int = DEFAULT_CACHE_LIMIT,
                 module: Any = None, quiet: bool = False):
        self.fn = fn
        self.quiet = quiet  # warns of nothing (the library compiles a function the user did not)
        self.module = module
        self.cache_limit = cache_limit
        self.entries: dict[tuple, list[CompiledEntry]] = {}
        self._positional: list[CompiledEntry] = []  # entries traced from f(tensor, tensor, ...)
        self._structure = capture.STRUCTURE_SET[0]
        self._warned_replaced = False
        self.hits = 0
        self.misses = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if capture.active() is not None:
            # called while another compiled function traces: its body becomes part of that trace
            return self.fn(*args, **kwargs)
        if capture.STRUCTURE_SET[0] != self._structure:
            # a module a trace has seen gained or lost a parameter, buffer or submodule
            self._structure = capture.STRUCTURE_SET[0]
            self.forget()
        if not kwargs:
            # the common call, tensors passed positionally: each entry's replay checks them
            result = self._replay(self._positional, args)
            if result is not MISS:
                return result
        flat: list[Tensor] = []
        sig = signature(flatten((args, kwargs), flat), flat)
        result = self._replay(self.entries.get(sig, ()), flat)
        if result is not MISS:
            return result
        self.misses += 1
        entry, result = self._trace(args, kwargs, flat, sig)
        if entry is not None and sig[0] == positional_spec(len(args)):
            self._positional.append(entry)
        return result

    def _replay(self, entries: list[CompiledEntry], args: Any) -> Any:
        """The first replay of ``entries`` whose guards match this call, or MISS. An entry that
        can never replay again is dropped: a tensor it reads is gone, or an optimizer's graph
        options changed (``capture.Retrace``)."""
        for entry in entries:
            try:
                result = entry.replay(args)
            except capture.Retrace:
                result = STALE
            if result is STALE:
                self._forget(entry)
            elif result is not MISS:
                self.hits += 1
                return result
        return MISS

    def forget(self) -> None:
        """Drop every entry: a tensor one of them holds was replaced by another object."""
        self.entries.clear()
        self._positional = []

    def _forget(self, entry: CompiledEntry) -> None:
        """Drop ``entry`` (new lists: a loop over the old ones goes on undisturbed)."""
        same = [e for e in self.entries[entry.signature] if e is not entry]
        if same:
            self.entries[entry.signature] = same
        else:
            del self.entries[entry.signature]
        self._positional = [e for e in self._positional if e is not entry]

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """Compiled methods bind like functions (one compiled cache per function)."""
        return self if obj is None else functools.partial(self.__call__, obj)

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("module")
        if module is not None:
            return getattr(module, name)
        raise AttributeError(name)

    @property
    def _label(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    @property
    def entry_count(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def _trace(self, args: tuple, kwargs: dict, flat: list[Tensor], sig: tuple
               ) -> tuple[CompiledEntry | None, Any]:
        if self.entry_count >= self.cache_limit and not self.quiet:
            previous = next(reversed(self.entries)) if self.entries else sig
            warnings.warn(
                f"fusegrad.compile({self._label}): "
                f"{self.entry_count + 1} compiled signatures exceed cache_limit="
                f"{self.cache_limit}; what changed: {describe_change(previous, sig)}",
                RuntimeWarning, stacklevel=3)
        t0 = time.perf_counter()
        if PENDING:
            realize(*PENDING.values())
        for t in flat:
            if t.node.op != "buffer":
                realize(t)
        trace = capture.Trace(Buffer.mark(), {id(t.node.attrs[0].root()): i
                                              for i, t in enumerate(flat)})
        trace.arg_aliases = aliases(flat)
        trace.seq_start = seq_mark()
        if self.module is not None:
            for m in self.module.modules():
                trace.modules[id(m)] = m
        capture.push(trace)
        try:
            result = self.fn(*args, **kwargs)
        finally:
            capture.pop()
        for m in list(trace.modules.values()):
            for sub in m.modules():  # from now on, their structure changes count
                sub.__dict__["_traced"] = True
        ret_flat: list[Tensor] = []
        ret_spec = flatten(result, ret_flat)
        pending = pending_targets([t for t in ret_flat if t.node.op != "buffer"])
        nodes = output_nodes(pending)
        outputs = list(dict.fromkeys(nodes))
        out_index = {n: i for i, n in enumerate(outputs)}
        out_of = {id(t): out_index[n] for t, n in zip(pending, nodes)}
        for t, n in zip(pending, nodes):
            out_index.setdefault(t.node, out_index[n])
        traced_ops = len(toposort(outputs)) if outputs else 0
        entry_p, leaves = prepare(outputs) if outputs else (None, [])
        modules = list(trace.modules.values())
        entry = CompiledEntry(sig, entry_p, ret_spec, [weakref.ref(m) for m in modules],
                              tuple(_mode(m) for m in modules), traced_ops)
        entry.replay_source, entry.replay, entry.held = write_replay(
            entry, trace, flat, pending, out_of, {i for i, n in enumerate(outputs)
                                                  if n.op == ops.ASSIGN},
            entry_p, leaves, ret_flat, out_index,
            lambda msg: self.quiet or warnings.warn(f"fusegrad.compile({self._label}) {msg}",
                                                    RuntimeWarning, stacklevel=5))
        # run this first call with the program just compiled, exactly as a replay does
        values = run_entry(entry_p, leaves) if entry_p is not None else []
        bind_outputs(pending, nodes, dict(zip(outputs, values)))
        entry.trace_seconds = time.perf_counter() - t0
        if trace.state_created:
            # the body took a "no state yet" branch (a custom optimizer creating its state on its
            # first step): the next call, with the state, is traced again and replayed after
            return None, unflatten(ret_spec, ret_flat)
        unreplayable = _unreplayable(trace, flat)
        if unreplayable:
            # every call runs the body (another compiled function that read an object the body
            # replaced finds it gone and traces again)
            if not self._warned_replaced and not self.quiet:
                self._warned_replaced = True
                warnings.warn(f"fusegrad.compile({self._label}): "
                              f"{unreplayable}", RuntimeWarning, stacklevel=3)
            return None, unflatten(ret_spec, ret_flat)
        self.entries.setdefault(sig, []).append(entry)
        for ref in entry.held:
            if ref() is not None:
                capture.hold(ref(), self)
        return entry, unflatten(ret_spec, ret_flat)

    def explain(self) -> str:
        """What each compiled signature holds: ops, passes, kernels, buffers, times, hits."""
        return describe(self)

def compile(fn: Callable[..., Any] | None = None, *, cache_limit: int = DEFAULT_CACHE_LIMIT
            ) -> Any:  # noqa: A001 - fusegrad.compile like torch.compile
    """Trace ``fn`` once per signature and replay the compiled program on later calls.

    Usable as ``@fusegrad.compile``, ``@fusegrad.compile(cache_limit=4)`` and on a Module
    (``fusegrad.compile(model)`` compiles its forward).
    """
    if fn is None:
        return lambda f: compile(f, cache_limit=cache_limit)
    if hasattr(fn, "forward") and hasattr(fn, "modules"):
        return CompiledFunction(fn.__call__, cache_limit, module=fn)
    return CompiledFunction(fn, cache_limit)
