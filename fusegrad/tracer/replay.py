"""The replay of one ``fusegrad.compile`` trace, written as straight-line Python.

``write_replay`` reads a finished trace (which tensors the body read, wrote, returned, and
which grads it touched) and writes ``replay(args)``: check the guards, gather the program's
inputs, run the program, which writes parameters, state and accumulated grads into their own
buffers (``assign``), then wrap the returned outputs. Everything known when the trace was taken
is written into the lines, so the Python around the kernels costs a few microseconds per call;
``explain()`` prints the function.

A *place* is how a replay finds a tensor that existed before the call: an ``int`` (that
argument) or a weak reference (a parameter, module buffer, optimizer state, grad's leaf or
other tensor from outside). A place whose tensor is gone makes the entry STALE; one whose
``requires_grad`` changed makes the call a MISS (freezing a parameter changes what the body
computes).
"""
from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.graph import substitute, toposort
from ..ir.node import Node
from . import capture
from .autograd import LazySource
from .functions import node_of
from .grad_mode import is_grad_enabled
from .pytree import unflatten
from .realize import STATS, Entry, realize
from .rng import next_key
from .signature import alias_guards, signature_guards
from .tensor import PENDING, Tensor, _detached


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISS = _Sentinel("MISS")    # the guards do not match this call: nothing ran
STALE = _Sentinel("STALE")  # a tensor the entry reads no longer exists: it can never replay


def _new_tensor(array, shape: tuple[int, ...], dtype: str) -> Tensor:
    return Tensor._from_node(ops.buffer(Buffer(shape, dtype, array)))


def _rebind(t: Tensor, array) -> None:
    """Make the argument ``t`` hold ``array``, its new value, in a new buffer (an update the
    program could not write into ``t``'s buffer: ``t`` has autograd history)."""
    buf = Buffer(t.node.shape, t.node.dtype, array)
    if t.requires_grad and t._is_leaf:
        buf.owner = weakref.ref(t)
    t._bind(ops.buffer(buf))


def _view(t: Tensor, requires_grad: bool) -> Tensor:
    """A new tensor on ``t``'s value: as a clone or view made inside the body (autograd kept)
    or as a ``detach()``."""
    if requires_grad:
        return Tensor._from_node(node_of(t), requires_grad=True)
    return Tensor._from_node(_detached(t.node))


def _with_history(t: Tensor, expr: Node, stand_ins: list[Node], leaves: list[Node]) -> None:
    """Give ``t`` (a value this call computed) the autograd history a backward will need: its
    expression is built if a backward reaches it."""
    t.requires_grad, t._is_leaf = True, False
    t.node.attrs[0].source = LazySource(expr, stand_ins, leaves)


_ENV = {"_new_tensor": _new_tensor, "_mark_state": capture.mark_state, "_rebind": _rebind,
        "_unflatten": unflatten, "_next_key": next_key, "_STATS": STATS, "MISS": MISS,
        "STALE": STALE, "Tensor": Tensor, "PENDING": PENDING, "_grad_enabled": is_grad_enabled,
        "_realize": realize, "_wrap": Tensor._from_node, "_with_history": _with_history,
        "_LazySource": LazySource, "_detached": _detached, "_node_of": node_of,
        "_MODES_SET": capture.MODES_SET, "_view": _view, "_Buffer": Buffer, "_leaf": ops.buffer}


class ReplayWriter:
    """Where a replay finds what one finished trace read, wrote and returned, and the lines
    that fetch it. Each place is fetched once, before anything else can fail."""

    def __init__(self, trace: capture.Trace, flat: list[Tensor], pending: list[Tensor]):
        self.trace, self.flat = trace, flat
        self.targets = {id(t) for t in pending}
        self.arg_index = {id(t): i for i, t in enumerate(flat)}
        # the grad tensors the body read or wrote, to their leaf's place
        self.grad_of = {id(g): self.place(leaf()) for leaf, g in trace.grad_seen.values()
                        if g is not None and leaf() is not None}
        for ref in trace.grad_cleared.values():  # grads the body set, or a backward made
            if (leaf := ref()) is not None and leaf._grad is not None:
                self.grad_of[id(leaf._grad)] = self.place(leaf)
        self.env: dict[str, Any] = dict(_ENV)
        self.held: list[weakref.ref] = []        # the weakly held tensors the replay reads
        self.fetch: list[str] = []               # lines: places, then guards and data reads
        self.lines: list[str] = []
        self._fetched: dict[int, str] = {}
        self._checked: set[str] = set()          # places whose requires_grad is checked
        self._data: dict[tuple, str] = {}
        self.rng: dict[int, str] = {}            # id(random key's buffer) -> its variable
        self.exprs: dict[int, str] = {}          # output index -> its history's expression
        self.stand_ins = ""                      # the name of the history's stand-ins

    def place(self, t: Tensor) -> Any:
        return self.arg_index.get(id(t), weakref.ref(t))

    def name(self, prefix: str, value: Any) -> str:
        key = f"{prefix}{len(self.env)}"
        self.env[key] = value
        return key

    def tensor(self, place: Any, value: bool = True) -> str:
        """The expression of the tensor at ``place``; ``value``: the replay reads its value (a
        changed ``requires_grad`` then misses), not only its grad."""
        if isinstance(place, int):
            return f"args[{place}]"
        t = place()
        if id(t) not in self._fetched:
            var = self._fetched[id(t)] = f"s{len(self._fetched)}"
            if t is None:  # gone already: this entry never replays
                self.fetch.append("return STALE")
                return var
            self.held.append(place)
            self.fetch += [f"{var} = {self.name('ref', place)}()",
                           f"if {var} is None: return STALE"]
        var = self._fetched[id(t)]
        if value and t is not None and var not in self._checked:
            self._checked.add(var)
            self.fetch.append(f"if {var}.requires_grad is not {t.requires_grad!r}: return MISS")
        return var

    def data(self, kind: str, place: Any) -> str:
        """The array of the tensor at ``place`` (``kind`` "tensor") or of its grad ("grad",
        which must exist), read once."""
        key = (kind, place) if isinstance(place, int) else (kind, "ref", id(place()))
        if key not in self._data:
            tensor = self.tensor(place, value=kind != "grad")
            if kind == "grad":
                self.lines.append(f"if {tensor}._grad is None: return MISS")
                tensor += "._grad"
            var = self._data[key] = f"a{len(self._data)}"
            self.lines.append(f"{var} = {tensor}.node.attrs[0].data")  # realized by now
        return self._data[key]

    def source(self, buf: Buffer) -> tuple[str, Any]:
        """Where a replay gets the value the trace read through ``buf``: ``("tensor", place)``,
        ``("grad", place)`` (the grad of that tensor, from before the call; one the body
        assigned is made again by every call: a constant), ``("rng", root buffer)`` (a random
        key, drawn anew) or ``("const", None)`` (made inside the body: frozen)."""
        root, trace = buf.root(), self.trace
        if id(root) in trace.arg_buffers:
            return "tensor", trace.arg_buffers[id(root)]
        if root.rng_count:
            return "rng", root
        holder = self.holder(buf)
        if holder is not None and id(holder) in self.grad_of:
            return ("grad", self.grad_of[id(holder)]) if trace.existed_before(root) \
                else ("const", None)
        if holder is not None and (trace.existed_before(root) or id(holder) in self.targets):
            return "tensor", weakref.ref(holder)
        return "const", None

    def holder(self, buf: Buffer) -> Tensor | None:
        """The tensor whose current value a program input read through ``buf`` stands for.

        Walks from ``buf`` to the buffer it views (``alias_of``): the first state tensor (owner
        or holder) found wins, so a detached view of a parameter reads that parameter on replay
        while a parameter loaded from another model's arrays reads itself; else the first live
        holder."""
        first = None
        b: Buffer | None = buf
        while b is not None:
            for ref in (b.owner, b.holder):
                t = ref() if ref is not None else None
                if t is not None and (capture.is_state(t) or id(t) in self.targets):
                    return t
                first = first if first is not None or t is None else t
            b = b.alias_of
        return first

    def history(self, exprs: dict[int, Node]) -> str | None:
        """The line making ``h``, the leaves a backward of this call's values ``exprs`` (output
        index -> expression) will read, as they are before the call's updates; the expressions
        are rewritten over stand-ins of those leaves (None if a random key they read is not an
        input of the program, so a replay could not give it back)."""
        found = [n for n in toposort(list(exprs.values())) if n.op == "buffer"]
        stand_ins = [ops.buffer(Buffer(n.shape, n.dtype)) for n in found]
        leaves = []
        for node, stand_in in zip(found, stand_ins):
            buf = node.attrs[0]
            kind, what = self.source(buf)
            if kind == "tensor":
                t, live = self.tensor(what), buf.owner is not None or buf.source is not None
                grad = (self.flat[what] if isinstance(what, int) else what()).requires_grad
                leaves.append(f"{t}.node" if not grad else f"_node_of({t})" if live else
                              f"_detached({t}.node)")
            elif kind == "rng":
                key = self.rng.get(id(what))
                if key is None:
                    return None
                leaves.append(f"_leaf(_Buffer({node.shape!r}, {node.dtype!r}, {key}))")
            elif kind == "grad":
                leaves.append(f"{self.tensor(what, value=False)}._grad.node")
            else:
                leaves.append(self.name("leaf", node))
        rebuilt = substitute(list(exprs.values()), dict(zip(found, stand_ins)))
        self.exprs = {k: self.name("expr", e) for k, e in zip(exprs, rebuilt)}
        self.stand_ins = self.name("stand_ins", stand_ins)
        return f"h = [{', '.join(leaves)}]"


def write_replay(entry: Any, trace: capture.Trace, flat: list[Tensor], pending: list[Tensor],
                 out_of: dict[int, int], assigned: set[int], program: Entry | None,
                 leaves: list[Node], ret_flat: list[Tensor], out_index: dict[Node, int],
                 warn: Callable[[str], None]
                 ) -> tuple[str, Callable[[Any], Any], list[weakref.ref]]:
    """``replay(args)`` for the trace just taken of ``entry`` (a CompiledEntry: its signature,
    modules and counters), its source and the tensors it holds weakly.

    ``pending``: the tensors the program computes (``out_of``: id -> output index; the outputs
    in ``assigned`` are written into their targets' buffers); ``program`` and ``leaves``: the
    program and the leaves it reads; ``ret_flat``: the returned tensors. Also counts the kinds
    of inputs and outputs in ``entry.kinds`` for ``explain()``.
    """
    w = ReplayWriter(trace, flat, pending)
    emit, name, tensor = w.lines.append, w.name, w.tensor
    kinds: Counter[str] = Counter()
    # the grads the body read before setting them (a backward adds to a grad or makes it; an
    # optimizer step skips parameters without one) must be None, or not, as when traced
    for ref, grad in trace.grad_seen.values():
        if (leaf := ref()) is not None:
            emit(f"if ({tensor(w.place(leaf), value=False)}._grad is None) is not {grad is None}: "
                 "return MISS")

    # Parameters, module buffers, optimizer state, accumulated grads and arguments updated in
    # place are assigns: the program writes them, the replay has nothing to do. What else the
    # program computes is a grad made anew, an argument whose in-place update has a history (a
    # non-leaf gets a new buffer), or state given new storage (``p.data = q``), which a replay
    # cannot give it: that body runs on every call.
    grad_outputs, rebinds, updated = [], [], []
    for t in pending:
        k, i = out_of[id(t)], w.arg_index.get(id(t))
        if k in assigned:
            updated += [] if i is None else [i]
        elif id(t) in w.grad_of:
            grad_outputs.append((w.grad_of[id(t)], k, t.node.shape, t.node.dtype))
        elif i is not None:
            rebinds.append((i, k))
            updated.append(i)
        elif capture.is_state(t):
            trace.replaced.append(f"the storage of a state tensor of shape {list(t.shape)}")
    emit("if PENDING: _realize(*PENDING.values())")  # the program reads state from buffers
    alias_guards(trace.arg_aliases, updated, len(flat), emit)
    for hook in trace.replay_hooks.values():
        emit(f"{name('hook', hook)}()")
    for buf, check in trace.input_checks.values():
        if id(buf) in trace.arg_buffers:
            emit(f"{name('check', check)}({w.data('tensor', trace.arg_buffers[id(buf)])})")

    inputs: list[str] = []
    draws = []
    for s in (program.slots if program is not None else []):
        buf = leaves[s].attrs[0]
        kind, what = w.source(buf)
        kinds[kind if kind != "tensor" else "arg" if isinstance(what, int) else "state"] += 1
        if kind == "rng":  # random keys are drawn in the order the trace drew them
            w.rng[id(what)] = f"k{len(inputs)}"
            draws.append((what.serial, f"k{len(inputs)} = _next_key({int(what.rng_count)})"))
        inputs.append(w.data(kind, what) if kind in ("tensor", "grad") else
                      f"{name('const', buf)}.data" if kind == "const" else w.rng[id(what)])
    grad_nones = [w.place(leaf) for ref in trace.grad_cleared.values()
                  if (leaf := ref()) is not None and leaf._grad is None]
    w.lines += [line for _, line in sorted(draws)]

    # Returned tensors are made before the program runs and given their arrays after it: the
    # Python that follows the kernels runs on cold caches, so it is kept to plain stores.
    returned, fill = [], []
    made: dict[int, str] = {}  # output index -> its tensor (a value returned twice is one tensor)
    exprs: dict[int, Node] = {}  # output index -> value that requires grad
    for n, t in enumerate(ret_flat):
        if id(t) in w.grad_of:  # a grad after the call, or one the body replaced, as it was
            place = w.grad_of[id(t)]
            if (flat[place] if isinstance(place, int) else place())._grad is t:
                returned.append(f"{tensor(place, value=False)}.grad")
            else:
                emit(f"d{n} = {tensor(place, value=False)}._grad")
                returned.append(f"d{n}")
        elif id(t) in w.arg_index or capture.is_state(t) or (
                t.node not in out_index and t.seq < trace.seq_start):
            returned.append(tensor(w.place(t)))  # a tensor from before the call, itself
        elif t.node in out_index:
            k = out_index[t.node]
            kinds["returned"] += 1
            if k not in made:
                made[k] = f"r{k}"
                emit(f"r{k} = _new_tensor(None, {t.node.shape!r}, {t.node.dtype!r})")
                fill.append(f"r{k}.node.attrs[0].data = outs[{k}]")
            if t.requires_grad:  # any of the tensors returned for it
                exprs.setdefault(k, t.node)
            returned.append(made[k])
        elif id((buf := t.node.attrs[0]).root()) in trace.arg_buffers or \
                ((holder := w.holder(buf)) is not None and trace.existed_before(buf)):
            # a view, clone() or detach() the body took of an argument or state: of its value
            # before the call's updates
            place = trace.arg_buffers.get(id(buf.root()))
            place = weakref.ref(holder) if place is None else place
            emit(f"d{n} = _view({tensor(place)}, {t.requires_grad!r})")
            returned.append(f"d{n}")
        else:
            returned.append(f"_wrap({name('leaf', t.node)})")  # made inside: a constant

    freed, history = list(exprs), None
    if not trace.backward and program is not None:
        # a forward without its backward: keep what a later backward will need
        exprs.update({k: flat[i].node for i, k in rebinds if flat[i].requires_grad})
        history = w.history(exprs) if exprs else None
        if exprs and history is None:
            warn("returns a tensor that requires grad and depends on random numbers the program "
                 "does not read back: later calls return its value without autograd history; "
                 "call backward() inside the compiled function")
    if history is not None:
        emit(history)
        freed = []
    exprs = exprs if history is not None else {}
    for k in freed:  # without a history its graph is gone, as after a backward that freed it
        emit(f"r{k}.requires_grad, r{k}._is_leaf, r{k}._graph_freed = True, False, True")

    if program is not None:  # None: the function computes nothing
        run = name("entry", program)
        emit(f"_STATS.ran({run})")
        emit(f"outs = {run}.compiled.program.run([{', '.join(inputs)}])")
    # State, accumulated grads and arguments updated in place were written by the program into
    # their own buffers (``assign``). A grad made anew, or an argument whose update has a
    # history, gets a buffer of its own (a copy where another tensor holds the same output).
    taken = set(made)

    def out(k: int) -> str:
        if k in taken:
            return f"outs[{k}].copy()"
        taken.add(k)
        return f"outs[{k}]"

    for i, k in rebinds:
        emit(f"_rebind(args[{i}], {out(k)})")
        if k in exprs:
            emit(f"args[{i}].node.attrs[0].source = _LazySource({w.exprs[k]}, {w.stand_ins}, h)")
    for place, k, shape, dtype in grad_outputs:
        emit(f"{tensor(place, value=False)}.grad = "
             f"_mark_state(_new_tensor({out(k)}, {shape!r}, {dtype!r}))")
    for place in grad_nones:
        emit(f"{tensor(place, value=False)}.grad = None")
    w.lines += fill
    for k in exprs:
        if k in made:
            emit(f"_with_history({made[k]}, {w.exprs[k]}, {w.stand_ins}, h)")
    emit(f"{name('entry', entry)}.replays += 1")
    spec = entry.return_spec
    emit(f"return {returned[spec[1]]}" if spec[0] == "T" else
         f"return _unflatten({name('spec', spec)}, [{', '.join(returned)}])")
    kinds.update({"assigns": len(assigned), "new grads": len(grad_outputs)})
    entry.kinds = kinds
    body = signature_guards(entry, name) + w.fetch + w.lines
    source = "def replay(args):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, f"<fusegrad replay {id(entry):x}>", "exec"), w.env)  # noqa: S102
    return source, w.env["replay"], w.held
