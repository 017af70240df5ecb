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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.buffer import Buffer
from ..ir import ops
from ..ir.graph import substitute, toposort
from ..ir.node import Node
from . import capture
from ..backends.pipeline import full_report
from .realize import (Entry, bind_outputs, output_nodes, pending_targets, prepare, realize,
                      run_entry)
from .grad_mode import is_grad_enabled
from .pytree import flatten, unflatten
from .replay import MISS, STALE, build_replay
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
@dataclass
class _History:
    """How a replay gives values the autograd history a backward needs (a function without a
    backward inside): the expression of each output that requires grad (returned, or a state
    or argument updated in place), over stand-ins of the expressions' leaves, and where each
    leaf comes from on a call, as ``(kind, what, mode)``. ``kind`` is ``arg`` (argument index),
    ``state`` (weakref), ``rng`` (program input index of the key) or ``const`` (the leaf);
    ``mode`` is ``live`` (gradients flowed to the tensor when traced), ``detached`` (they did
    not: a ``detach()``) or ``plain`` (the tensor did not require grad)."""

    exprs: dict[int, Node]                     # output index -> expression over stand_ins
    stand_ins: list[Node]
    leaves: list[tuple[str, Any, str]]


@dataclass
class _Slot:
    kind: str           # "arg" | "state" | "grad" | "const" | "rng"
    ref: Any            # arg index | weakref to Tensor | leaf | Buffer | rng count


@dataclass(eq=False)  # entries are compared by identity
class CompiledEntry:
    """One traced signature: the program, where its inputs come from, what its outputs set.

    A "leaf" below is a tensor whose gradient the body touched: this call's argument (an int,
    its index) or a weakref to the tensor."""

    signature: tuple
    program_entry: Entry
    slots: list[_Slot]
    rng_order: list[int]                       # slot indices of random keys, in draw order
    assigns: int                               # outputs written into buffers they keep
    arg_rebinds: list[tuple[int, int]]         # (argument with a history, output): new buffer
    updated_args: list[int]                    # arguments the program updates in place
    grad_outputs: list[tuple[Any, int]]        # (leaf, output index): grads made anew
    returns: list[tuple[str, Any]]             # where each returned tensor comes from
    return_spec: Any
    modules: list[Any]                         # weakrefs to the modules called
    modes: tuple[bool, ...]
    grad_guards: list[tuple[Any, bool]]        # (leaf, grad must be None)
    hooks: list[Callable[[], None]]
    input_checks: list[tuple[int, Callable[[Any], None]]]  # (flat argument index, check)
    arg_aliases: list[tuple[int, int]]         # arguments that shared memory when traced
    history: _History | None                   # autograd of returned values (no backward inside)
    grad_nones: list[Any]                      # leaves whose grad each call sets to None
    held: list[Any]                            # weakrefs: replacing one makes this trace stale
    traced_ops: int
    trace_seconds: float
    replays: int = 0
    output_meta: list[tuple[tuple[int, ...], str]] = field(default_factory=list)

    # returned outputs that required grad when traced: a replay's are non-leaves requiring grad
    # (without a history, their graph is gone, as after a backward that freed it)
    grad_returns: frozenset[int] = frozenset()
    replay_source: str = ""
    replay: Callable[[Any], Any] | None = field(default=None, repr=False)

    def build(self) -> None:
        """Generate ``replay(args)``, this entry's guards and replay as straight-line Python
        (see ``replay.py``): it returns ``MISS`` when ``args`` or the modules' modes do not
        match the signature, else runs the program and returns what the function returned."""
        self.replay_source, self.replay = build_replay(self)


def _history(exprs: dict[int, Node], trace: capture.Trace, target_ids: set[int],
             leaves: list[Node], entry_p: Entry, flat: list[Tensor], grad_of: dict[int, Any]
             ) -> _History | None:
    """The ``_History`` of the outputs ``exprs`` (None if a random key they read is not an input
    of the program, so a replay could not give it back)."""
    rng_input = {id(leaves[p].attrs[0].root()): j for j, p in enumerate(entry_p.slots)
                 if leaves[p].attrs[0].root().rng_count}
    found = [n for n in toposort(list(exprs.values())) if n.op == "buffer"]
    sources: list[tuple[str, Any, str]] = []
    for node in found:
        buf = node.attrs[0]
        kind, what = _classify(buf, trace, target_ids, grad_of)
        tensor = flat[what] if kind == "arg" else what() if kind == "state" else None
        if kind == "rng":
            if id(what) not in rng_input:
                return None
            what = rng_input[id(what)]
        elif kind == "const":
            what = node
        mode = "plain" if tensor is None or not tensor.requires_grad else \
            "live" if buf.owner is not None or buf.source is not None else "detached"
        sources.append((kind, what, mode))
    stand_ins = [ops.buffer(Buffer(n.shape, n.dtype)) for n in found]
    rebuilt = substitute(list(exprs.values()), dict(zip(found, stand_ins)))
    return _History(dict(zip(exprs, rebuilt)), stand_ins, sources)


def _classify(buf: Buffer, trace: capture.Trace, target_ids: set[int],
              grad_of: dict[int, Any]) -> tuple[str, Any]:
    """Where a replay gets the value a leaf of the trace read through ``buf``: ``("arg", index)``,
    ``("rng", root buffer)`` (a random key, drawn anew), ``("grad", leaf)`` (the ``.grad`` of a
    leaf, read from the leaf on each call), ``("state", weakref to the tensor)`` or
    ``("const", None)`` (made inside the trace: frozen)."""
    root = buf.root()
    if id(root) in trace.arg_buffers:
        return "arg", trace.arg_buffers[id(root)]
    if root.rng_count:
        return "rng", root
    holder = _source_tensor(buf, target_ids)
    if holder is not None and id(holder) in grad_of:
        # a grad from before the call is the leaf's grad on a replay; one the body assigned
        # (w.grad = zeros) is made again by every call
        return ("grad", grad_of[id(holder)]) if trace.existed_before(root) else ("const", None)
    if holder is not None and (trace.existed_before(root) or id(holder) in target_ids):
        return "state", weakref.ref(holder)
    return "const", None


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
    if trace.grads and any(t.requires_grad and not t._is_leaf for t in flat):
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


def _return_source(t: Tensor, out_index: dict[Node, int], arg_index: dict[int, int],
                   trace: capture.Trace, target_ids: set[int], grad_of: dict[int, Any],
                   flat: list[Tensor]) -> tuple[str, Any]:
    """Where a replay gets the returned tensor ``t`` from, as ``(kind, what)``.

    ``out``: a new tensor holding program output ``what``; ``arg``: this call's argument
    ``what``; ``kept``: a tensor that existed before the call (state, updated by the call, or a
    tensor from outside), itself; ``view``: a new tensor on the value an argument (its index) or
    a kept tensor (a weakref) had before the call, requiring grad (as a clone or view) or not
    (a detach), ``what = (source, requires_grad)``; ``const``: a new tensor on the constant leaf
    ``what``, made inside the function; ``grad``: the ``.grad`` of the leaf ``what`` after the
    call (``grad_before``: before it, a grad the body replaced).
    """
    if id(t) in grad_of:
        leaf = grad_of[id(t)]
        leaf_tensor = flat[leaf] if isinstance(leaf, int) else leaf()
        return ("grad" if leaf_tensor._grad is t else "grad_before"), leaf
    if id(t) in arg_index:
        return "arg", arg_index[id(t)]
    if capture.is_state(t):
        return "kept", weakref.ref(t)
    if t.node in out_index:
        return "out", out_index[t.node]
    if t.seq < trace.seq_start:  # a tensor from outside, which the body did not touch
        return "kept", weakref.ref(t)
    # made inside the body on a value computed before it: a detach(), clone() or view of an
    # argument or state, as it was before the call's updates; else a constant
    buf = t.node.attrs[0]
    if id(buf.root()) in trace.arg_buffers:
        return "view", (trace.arg_buffers[id(buf.root())], t.requires_grad)
    source = _source_tensor(buf, target_ids)
    if source is not None and trace.existed_before(buf):
        return "view", (weakref.ref(source), t.requires_grad)
    return "const", t.node


def _source_tensor(buf: Buffer, target_ids: set[int]) -> Tensor | None:
    """The tensor whose current value a program input read through ``buf`` stands for.

    Walks from ``buf`` to the buffer it views (``alias_of``): the first state tensor (owner or
    holder) found wins, so a detached view of a parameter reads that parameter on replay while a
    parameter loaded from another model's arrays reads itself; else the first live holder.
    """
    first = None
    b: Buffer | None = buf
    while b is not None:
        for ref in (b.owner, b.holder):
            t = ref() if ref is not None else None
            if t is None:
                continue
            if capture.is_state(t) or id(t) in target_ids:
                return t
            first = first if first is not None else t
        b = b.alias_of
    return first


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
    def entry_count(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def _trace(self, args: tuple, kwargs: dict, flat: list[Tensor], sig: tuple
               ) -> tuple[CompiledEntry | None, Any]:
        if self.entry_count >= self.cache_limit:
            previous = next(reversed(self.entries)) if self.entries else sig
            warnings.warn(
                f"fusegrad.compile({getattr(self.fn, '__qualname__', self.fn)}): "
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
        assigned = {i for i, n in enumerate(outputs) if n.op == ops.ASSIGN}
        entry = self._record(trace, sig, entry_p, leaves, pending, out_index, out_of, flat,
                             ret_flat, ret_spec, traced_ops, assigned)
        entry.grad_returns = frozenset(what for t, (kind, what) in zip(ret_flat, entry.returns)
                                       if kind == "out" and t.requires_grad)
        # run this first call with the program just compiled, exactly as a replay does
        values = run_entry(entry_p, leaves) if entry_p is not None else []
        bind_outputs(pending, nodes, dict(zip(outputs, values)))
        entry.build()
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
                warnings.warn(f"fusegrad.compile({getattr(self.fn, '__qualname__', self.fn)}): "
                              f"{unreplayable}", RuntimeWarning, stacklevel=3)
            return None, unflatten(ret_spec, ret_flat)
        self.entries.setdefault(sig, []).append(entry)
        for ref in entry.held:
            if ref() is not None:
                capture.hold(ref(), self)
        return entry, unflatten(ret_spec, ret_flat)

    def _record(self, trace: capture.Trace, sig: tuple, entry_p: Entry | None,
                leaves: list[Node], pending: list[Tensor], out_index: dict[Node, int],
                out_of: dict[int, int], flat: list[Tensor], ret_flat: list[Tensor],
                ret_spec: Any, traced_ops: int, assigned: set[int]) -> CompiledEntry:
        target_ids = {id(t) for t in pending}
        arg_index = {id(t): i for i, t in enumerate(flat)}
        # a leaf whose gradient the body touched: this call's argument, or a weakref
        leaf_of = {id(ref()): arg_index.get(id(ref()), ref) for ref, _ in trace.grads.values()
                   if ref() is not None}
        # the grad tensors the body read or wrote, to their leaf: a replay uses the leaf's grad
        grad_of = {id(g): arg_index.get(id(leaf()), leaf)
                   for g, leaf in trace.grad_reads.values() if leaf() is not None}
        grad_of.update({id(leaf._grad): arg_index.get(id(leaf), ref)
                        for ref in trace.grad_cleared.values()  # grads the body assigned
                        if (leaf := ref()) is not None and leaf._grad is not None})
        grad_of.update({id(leaf._grad): leaf_of[id(leaf)] for ref, _ in trace.grads.values()
                        if (leaf := ref()) is not None and leaf._grad is not None})
        slots: list[_Slot] = []
        rng: list[tuple[int, int]] = []
        for s in (entry_p.slots if entry_p is not None else []):
            buf = leaves[s].attrs[0]
            kind, what = _classify(buf, trace, target_ids, grad_of)
            if kind == "rng":
                rng.append((what.serial, len(slots)))
                slots.append(_Slot("rng", what.rng_count))
            else:
                slots.append(_Slot(kind, buf if kind == "const" else what))
        # Parameters, module buffers, optimizer state, accumulated grads and arguments updated in
        # place are assigns: the program writes them, the replay has nothing to do. What else
        # the program computes is a grad made anew, an argument whose in-place update has a
        # history (a non-leaf gets a new buffer), or state given new storage (``p.data = q``),
        # which a replay cannot give it: that body runs on every call.
        grad_outputs, arg_rebinds, updated_args = [], [], []
        for t in pending:
            k = out_of[id(t)]
            if k in assigned:
                if id(t) in arg_index:
                    updated_args.append(arg_index[id(t)])
            elif id(t) in grad_of:
                grad_outputs.append((grad_of[id(t)], k))
            elif id(t) in arg_index:
                arg_rebinds.append((arg_index[id(t)], k))
            elif capture.is_state(t):
                trace.replaced.append(f"the storage of a state tensor of shape {list(t.shape)}")
        returns = [_return_source(t, out_index, arg_index, trace, target_ids, grad_of, flat)
                   for t in ret_flat]
        history = None
        if not trace.grads and entry_p is not None:
            # a forward without its backward: keep what a later backward will need
            exprs = {k: t.node for t, (kind, k) in zip(ret_flat, returns)
                     if kind == "out" and t.requires_grad}
            exprs.update({k: flat[i].node for i, k in arg_rebinds if flat[i].requires_grad})
            history = _history(exprs, trace, target_ids, leaves, entry_p, flat, grad_of) \
                if exprs else None
            if exprs and history is None:
                warnings.warn(
                    f"fusegrad.compile({getattr(self.fn, '__qualname__', self.fn)}) returns a "
                    "tensor that requires grad and depends on random numbers the program does not "
                    "read back: later calls return its value without autograd history; call "
                    "backward() inside the compiled function", RuntimeWarning, stacklevel=4)
        guards = [(leaf_of[id(ref())], mode == "none") for ref, mode in trace.grads.values()
                  if mode in ("none", "read") and ref() is not None]
        # grads the body looked at before setting them: None, or not, as when traced (an
        # optimizer step skips parameters without one)
        guards += [(arg_index.get(id(leaf), ref), was_none)
                   for ref, was_none in trace.grad_seen.values()
                   if (leaf := ref()) is not None and trace.grads.get(id(leaf), (0, ""))[1]
                   not in ("none", "read")]  # those two have their guard already
        # grads the body set to None and left so: set to None again by each replay
        grad_nones = [arg_index.get(id(leaf), ref) for ref in trace.grad_cleared.values()
                      if (leaf := ref()) is not None and leaf._grad is None]
        modules = list(trace.modules.values())
        held = [s.ref for s in slots if s.kind in ("state", "grad")]
        held += [t for t, _ in grad_outputs]
        held += [t for t, _ in guards]
        held += [what if kind != "view" else what[0] for kind, what in returns
                 if kind in ("kept", "grad", "grad_before", "view")]
        held += [what for kind, what, _ in (history.leaves if history else ())
                 if kind in ("state", "grad")]
        return CompiledEntry(
            signature=sig, program_entry=entry_p, slots=slots,
            rng_order=[i for _, i in sorted(rng)], assigns=len(assigned),
            arg_rebinds=arg_rebinds, updated_args=updated_args + [i for i, _ in arg_rebinds],
            grad_outputs=grad_outputs, returns=returns, return_spec=ret_spec,
            modules=[weakref.ref(m) for m in modules],
            modes=tuple(m.training for m in modules), grad_guards=guards,
            hooks=list(trace.replay_hooks),
            input_checks=[(trace.arg_buffers[id(buf)], check) for buf, check in trace.input_checks
                          if id(buf) in trace.arg_buffers],
            arg_aliases=trace.arg_aliases, history=history, grad_nones=grad_nones,
            held=[ref for ref in held if isinstance(ref, weakref.ref) and ref() is not None],
            traced_ops=traced_ops, trace_seconds=0.0,
            output_meta=[(n.shape, n.dtype) for n in out_index])

    # ------------------------------------------------------------------ explain
    def explain(self) -> str:
        """What each compiled signature holds: ops, passes, kernels, buffers, times, hits."""
        from ..backends.numba_cpu import STATS as KSTATS
        lines = [f"fusegrad.compile({getattr(self.fn, '__qualname__', self.fn)}): "
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
        out.append(f"  buffers: {_plan_text(plan)}")
    kinds: dict[str, int] = {}
    for s in e.slots:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    out.append("  inputs: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) +
               f"; outputs: {e.assigns} assigns, {len(e.grad_outputs)} new grads, "
               f"{sum(kind == 'out' for kind, _ in e.returns)} returned")
    for stage, sec in report.seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms")
    for stage, sec in report.original_seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms (when first compiled)")
    out.append("  replay (generated Python run per call):")
    out.extend(f"    {line}" for line in e.replay_source.splitlines())
    return "\n".join(out)


def _plan_text(plan: Any) -> str:
    for name in ("total_bytes", "bytes"):
        if hasattr(plan, name):
            return f"{getattr(plan, name)} bytes"
    return str(plan).splitlines()[0]


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
