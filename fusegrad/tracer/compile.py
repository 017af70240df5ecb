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

import numpy as np

from ..ir.buffer import Buffer
from ..ir import ops
from ..ir.graph import toposort
from . import capture
from ..backends.pipeline import full_report
from .realize import (Entry, bind_outputs, output_nodes, pending_targets, prepare, realize,
                      run_entry)
from .grad_mode import is_grad_enabled
from .pytree import flatten, unflatten
from .replay import MISS, STALE, write_replay
from .tensor import PENDING, Tensor, seq_mark

DEFAULT_CACHE_LIMIT = 8


# ---------------------------------------------------------------------------- signatures
def _hashable(value: Any) -> Any:
    """A plain argument as part of a signature: its type and value, so that ``2``, ``2.0`` and
    ``True`` (equal in Python, different dtypes in a trace) differ; floats by their bits, so
    that ``-0.0`` differs from ``0.0`` and a NaN matches itself."""
    if isinstance(value, np.ndarray):
        raise TypeError("fusegrad.compile: pass arrays as fusegrad tensors (fusegrad.tensor(a)); a "
                        "numpy array argument would be frozen into the compiled program")
    if isinstance(value, (float, np.floating)):
        return (type(value).__name__, float(value).hex())
    try:
        hash(value)
        return (type(value).__name__, value)
    except TypeError:
        return ("unhashable", type(value).__name__, repr(value))


def _signature(spec: Any, tensors: list[Tensor]) -> tuple:
    """Structure and plain values of the arguments, and shape/dtype/requires_grad of tensors."""
    def strip(s: Any) -> Any:
        kind, body = s
        if kind == "T":
            return "T"
        if kind == "dict":
            return ("dict", tuple((k, strip(v)) for k, v in body))
        if kind in ("tuple", "list"):
            return (kind, tuple(strip(v) for v in body))
        return ("V", _hashable(body))
    return (strip(spec), tuple((t.node.shape, t.node.dtype, t.requires_grad and (
        "leaf" if t._is_leaf else "non-leaf")) for t in tensors), is_grad_enabled())


def _positional_spec(n: int) -> tuple:
    """The signature's argument structure for a call with ``n`` tensors, all positional."""
    return ("tuple", (("tuple", ("T",) * n), ("dict", ())))


def _describe_change(old: tuple, new: tuple) -> str:
    """The first difference between two signatures, in words."""
    for i, (a, b) in enumerate(zip(old[1], new[1])):
        if a != b:
            return (f"tensor argument {i}: shape {list(a[0])} {a[1]} -> shape {list(b[0])} "
                    f"{b[1]}")
    if old[0] != new[0]:
        return f"non-tensor arguments: {old[0]!r} -> {new[0]!r}"
    if old[2] != new[2]:
        return f"grad mode {'on' if old[2] else 'off'} -> {'on' if new[2] else 'off'}"
    if len(old[1]) != len(new[1]):
        return f"number of tensor arguments {len(old[1])} -> {len(new[1])}"
    return "module training modes or gradient state"


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


def _aliases(flat: list[Tensor]) -> list[tuple[int, int]]:
    """Pairs (first, later) of arguments viewing the same memory: the program read them as one
    input, so a replay needs them to share memory again."""
    first: dict[int, int] = {}
    pairs = []
    for i, t in enumerate(flat):
        root = id(t.node.attrs[0].root())
        if root in first:
            pairs.append((first[root], i))
        else:
            first[root] = i
    return pairs


# ---------------------------------------------------------------------------- the API
class CompiledFunction:
    """A function (or a Module's forward) that is traced once per signature and replayed."""

    def __init__(self, fn: Callable[..., Any], cache_limit: int = DEFAULT_CACHE_LIMIT,
                 module: Any = None):
        self.fn = fn
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
        sig = _signature(flatten((args, kwargs), flat), flat)
        result = self._replay(self.entries.get(sig, ()), flat)
        if result is not MISS:
            return result
        self.misses += 1
        entry, result = self._trace(args, kwargs, flat, sig)
        if entry is not None and sig[0] == _positional_spec(len(args)):
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
        if self.entry_count >= self.cache_limit:
            previous = next(reversed(self.entries)) if self.entries else sig
            warnings.warn(
                f"fusegrad.compile({self._label}): "
                f"{self.entry_count + 1} compiled signatures exceed cache_limit="
                f"{self.cache_limit}; what changed: {_describe_change(previous, sig)}",
                RuntimeWarning, stacklevel=3)
        t0 = time.perf_counter()
        if PENDING:
            realize(*PENDING.values())
        for t in flat:
            if t.node.op != "buffer":
                realize(t)
        trace = capture.Trace(Buffer.mark(), {id(t.node.attrs[0].root()): i
                                              for i, t in enumerate(flat)})
        trace.arg_aliases = _aliases(flat)
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
            lambda msg: warnings.warn(f"fusegrad.compile({self._label}) {msg}", RuntimeWarning,
                                      stacklevel=5))
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
            if not self._warned_replaced:
                self._warned_replaced = True
                warnings.warn(f"fusegrad.compile({self._label}): "
                              f"{unreplayable}", RuntimeWarning, stacklevel=3)
            return None, unflatten(ret_spec, ret_flat)
        self.entries.setdefault(sig, []).append(entry)
        for ref in entry.held:
            if ref() is not None:
                capture.hold(ref(), self)
        return entry, unflatten(ret_spec, ret_flat)

    # ------------------------------------------------------------------ explain
    def explain(self) -> str:
        """What each compiled signature holds: ops, passes, kernels, buffers, times, hits."""
        from ..backends.numba_cpu import STATS as KSTATS
        lines = [f"fusegrad.compile({self._label}): "
                 f"{self.entry_count} signature(s), {self.hits} replays (cache hits), "
                 f"{self.misses} traces (misses)"]
        for entries in self.entries.values():
            for e in entries:
                lines.append(_explain_entry(e))
        lines.append(f"kernels this process: {KSTATS.kernels_compiled} compiled, "
                     f"{KSTATS.kernels_loaded} loaded from the disk cache")
        return "\n".join(lines)


def _explain_entry(e: CompiledEntry) -> str:
    shapes = ", ".join(f"{list(s)} {d}" for s, d, _ in e.signature[1])
    out = [f"- signature ({shapes}): traced in {e.trace_seconds * 1e3:.1f} ms, "
           f"replayed {e.replays} times",
           f"  ops traced: {e.traced_ops}"]
    if e.program_entry is None:
        return "\n".join(out + ["  (nothing to compute)"])
    report = e.program_entry.compiled.report
    # a program loaded from the disk cache ran no pass here: they are run again to be shown
    passes = full_report(report).passes if report.from_disk else report.passes
    for rec in passes:
        out.append(f"  pass {rec.name:<10} {rec.nodes_before:5d} -> {rec.nodes_after:5d} nodes")
    out.append(f"  kernels: {report.kernel_count}, extern calls: {report.extern_count}")
    plan = getattr(report.program, "plan", None)
    if plan is not None:
        out.append(f"  buffers: {plan.total_bytes} bytes")
    k = e.kinds
    out.append("  inputs: " + ", ".join(f"{k[kind]} {kind}" for kind in sorted(k) if kind in
                                        ("arg", "const", "grad", "rng", "state")) +
               f"; outputs: {k['assigns']} assigns, {k['new grads']} new grads, "
               f"{k['returned']} returned")
    for stage, sec in report.seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms")
    for stage, sec in report.original_seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms (when first compiled)")
    out.append("  replay (generated Python run per call):")
    out.extend(f"    {line}" for line in e.replay_source.splitlines())
    return "\n".join(out)


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


def explain(fn: CompiledFunction, *args: Any, **kwargs: Any) -> str:
    """Call ``fn`` (a compiled function) with ``args`` if given, then describe it."""
    if args or kwargs:
        fn(*args, **kwargs)
    return fn.explain()
