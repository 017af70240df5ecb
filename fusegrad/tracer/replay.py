"""The replay of one ``fusegrad.compile`` entry, generated as straight-line Python.

A replay checks its guards, runs the replay hooks and input checks, gathers the program's
inputs and runs the program, which writes parameters, state and accumulated grads into their
own buffers (``assign``); then it wraps the returned outputs. Each of these is
one line of the generated function — no loop over slot kinds, no per-call lookups of what is
known when the entry is recorded — so the Python around the kernels costs a few microseconds per
call. ``CompiledEntry.replay_source`` holds the function (``explain()`` prints it).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.node import Node
from . import capture
from .autograd import LazySource
from .functions import node_of
from .grad_mode import is_grad_enabled
from .pytree import unflatten
from .realize import STATS, realize
from .rng import next_key
from .tensor import PENDING, Tensor, _detached

if TYPE_CHECKING:
    from .compile import CompiledEntry


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISS = _Sentinel("MISS")    # the guards do not match this call: nothing ran
STALE = _Sentinel("STALE")  # a tensor the entry reads no longer exists: it can never replay


def _realize_pending() -> None:
    """Compute every pending tensor first: the program reads state from buffers."""
    realize(*PENDING.values())


def _new_tensor(array, shape: tuple[int, ...], dtype: str) -> Tensor:
    return Tensor._from_node(ops.buffer(Buffer(shape, dtype, array)))


def _rebind(t: Tensor, array) -> None:
    """Make the argument ``t`` hold ``array``, its new value, in a new buffer (an update the
    program could not write into ``t``'s buffer: ``t`` has autograd history)."""
    buf = Buffer(t.node.shape, t.node.dtype, array)
    if t.requires_grad and t._is_leaf:
        buf.owner = weakref.ref(t)
    t._bind(ops.buffer(buf))


def _key_leaf(key, shape: tuple[int, ...], dtype: str) -> Node:
    return ops.buffer(Buffer(shape, dtype, key))


def _view(t: Tensor, requires_grad: bool) -> Tensor:
    """A new tensor on ``t``'s value: as a clone or view made inside the body (autograd kept)
    or as a ``detach()``."""
    if requires_grad:
        return Tensor._from_node(node_of(t), requires_grad=True)
    return Tensor._from_node(_detached(t.node))


def _with_history(t: Tensor, expr: Node, stand_ins: list[Node], leaves: list[Node]) -> None:
    """Give ``t`` (a value this call computed) the autograd history a backward will need: its
    expression is built if a backward reaches it."""
    t.requires_grad = True
    t._is_leaf = False
    t.node.attrs[0].source = LazySource(expr, stand_ins, leaves)


def replay_source(entry: CompiledEntry) -> tuple[str, dict[str, Any]]:
    """The source of ``replay(args)`` for ``entry`` and the names it refers to."""
    env: dict[str, Any] = {
        "_new_tensor": _new_tensor, "_mark_state": capture.mark_state,
        "_rebind": _rebind,
        "_unflatten": unflatten, "_next_key": next_key, "_STATS": STATS, "MISS": MISS,
        "STALE": STALE, "Tensor": Tensor, "PENDING": PENDING, "_grad_enabled": is_grad_enabled,
        "_realize_pending": _realize_pending, "_wrap": Tensor._from_node, "_key_leaf": _key_leaf,
        "_with_history": _with_history, "_LazySource": LazySource, "_detached": _detached,
        "_node_of": node_of, "_MODES_SET": capture.MODES_SET, "_view": _view}
    body: list[str] = []
    emit = body.append

    def name(prefix: str, value: Any) -> str:
        key = f"{prefix}{len(env)}"
        env[key] = value
        return key

    loaded: dict[tuple[str, int], str] = {}  # (kind, argument index or tensor id) -> array
    state_var: dict[int, str] = {}           # id(state tensor) -> local variable

    def data(kind: str, key: int, source: str) -> str:
        if (kind, key) not in loaded:
            var = loaded[kind, key] = f"a{len(loaded)}"
            emit(f"{var} = {source}.node.attrs[0].data")  # every tensor is realized by now
        return loaded[kind, key]

    def state(ref: Any) -> str:  # each state tensor fetched once: a parameter is read and updated
        key = id(ref())
        if key not in state_var:
            var = state_var[key] = f"s{len(state_var)}"
            emit(f"{var} = {name('ref', ref)}()")
            emit(f"if {var} is None: return STALE")
            # freezing or unfreezing a parameter changes what the body computes
            emit(f"if {var}.requires_grad is not {ref().requires_grad!r}: return MISS")
        return state_var[key]

    leaf_var: dict[int, str] = {}

    def leaf(target: Any) -> str:  # a leaf whose grad the body touched (see CompiledEntry)
        if isinstance(target, int):
            return f"args[{target}]"
        if id(target()) in state_var:  # a parameter fetched as state already
            return state_var[id(target())]
        if id(target) not in leaf_var:
            var = leaf_var[id(target)] = f"l{len(leaf_var)}"
            emit(f"{var} = {name('leaf', target)}()")
            emit(f"if {var} is None: return STALE")
        return leaf_var[id(target)]

    # guards: the signature (the tensors' shapes, dtypes and requires_grad, grad mode), the
    # modules' training modes and the grads that must be None
    tensors = entry.signature[1]
    emit(f"if len(args) != {len(tensors)}: return MISS")
    for i, (shape, dtype, grad) in enumerate(tensors):
        emit(f"t = args[{i}]")
        emit("if not isinstance(t, Tensor): return MISS")
        emit(f"if t.node.shape != {shape!r} or t.node.dtype != {dtype!r} or "
             f"t.requires_grad is not {bool(grad)!r}: return MISS")
        if grad:
            emit(f"if t._is_leaf is not {grad == 'leaf'!r}: return MISS")
    emit(f"if _grad_enabled() is not {entry.signature[2]!r}: return MISS")
    if entry.modules:  # read again only after some module's mode was set
        seen = name("modes_seen", [-1])
        emit(f"if _MODES_SET[0] != {seen}[0]:")
        for ref, mode in zip(entry.modules, entry.modes):
            emit(f"    m = {name('module', ref)}()  # {type(ref()).__name__}")
            emit(f"    if m is not None and m.training is not {mode!r}: return MISS")
        emit(f"    {seen}[0] = _MODES_SET[0]")
    for target, must_be_none in entry.grad_guards:
        emit(f"if ({leaf(target)}._grad is None) is not {must_be_none!r}: return MISS")
    emit("if PENDING: _realize_pending()")
    _emit_alias_guards(entry, emit)

    for hook in entry.hooks:
        emit(f"{name('hook', hook)}()")
    for arg, check in entry.input_checks:
        emit(f"{name('check', check)}({data('arg', arg, f'args[{arg}]')})")

    inputs: list[str] = []
    for slot in entry.slots:
        if slot.kind == "const":
            inputs.append(f"{name('const', slot.ref)}.data")
        elif slot.kind == "arg":
            inputs.append(data("arg", slot.ref, f"args[{slot.ref}]"))
        elif slot.kind == "state":
            inputs.append(data("state", id(slot.ref()), state(slot.ref)))
        elif slot.kind == "grad":
            key = slot.ref if isinstance(slot.ref, int) else id(slot.ref)
            if ("grad", key) not in loaded:
                emit(f"if {leaf(slot.ref)}._grad is None: return MISS")
            inputs.append(data("grad", key, f"{leaf(slot.ref)}._grad"))
        else:
            inputs.append("")
    for target in [t for t, _ in entry.grad_outputs] + entry.grad_nones:
        leaf(target)  # fetched before the program runs: no STALE after it

    history = entry.history
    for kind, what, _ in (history.leaves if history is not None else ()):
        if kind == "state":  # every check that can miss comes first
            state(what)
        elif kind == "grad":
            leaf(what)
    for kind, what in entry.returns:
        if kind == "kept" or kind == "view" and not isinstance(what[0], int):
            state(what if kind == "kept" else what[0])
        elif kind in ("grad", "grad_before"):
            leaf(what)

    # Returned tensors are made before the program runs and given their arrays after it: the
    # Python that follows the kernels runs on cold caches, so it is kept to plain stores. A
    # detach() the body took of an argument or state reads it as it was before this call.
    returned: list[str] = []
    fill: list[str] = []
    made: dict[int, str] = {}  # output index -> its tensor (a value returned twice is one tensor)
    for n, (kind, what) in enumerate(entry.returns):
        if kind == "out":
            if what not in made:
                made[what] = f"r{what}"
                shape, dtype = entry.output_meta[what]
                emit(f"r{what} = _new_tensor(None, {shape!r}, {dtype!r})")
                if what in entry.grad_returns and (history is None or what not in history.exprs):
                    emit(f"r{what}.requires_grad, r{what}._is_leaf = True, False")
                    emit(f"r{what}._graph_freed = True")
                fill.append(f"r{what}.node.attrs[0].data = outs[{what}]")
            returned.append(made[what])
        elif kind == "arg":
            returned.append(f"args[{what}]")
        elif kind == "view":
            source, requires_grad = what
            source = f"args[{source}]" if isinstance(source, int) else state(source)
            emit(f"d{n} = _view({source}, {requires_grad!r})")
            returned.append(f"d{n}")
        elif kind == "kept":
            returned.append(state(what))
        elif kind == "grad":
            returned.append(f"{leaf(what)}.grad")
        elif kind == "grad_before":
            emit(f"d{n} = {leaf(what)}._grad")
            returned.append(f"d{n}")
        else:
            returned.append(f"_wrap({name('leaf', what)})")

    for j in entry.rng_order:  # random keys are drawn in the order the trace drew them
        inputs[j] = f"k{j}"
        emit(f"k{j} = _next_key({int(entry.slots[j].ref)})")
    if history is not None:
        # the leaves a backward of this call's values will read: as they are before its updates
        leaves = []
        for (kind, what, mode), stand_in in zip(history.leaves, history.stand_ins):
            if kind == "arg":
                tensor = f"args[{what}]"
            elif kind == "state":
                tensor = state(what)
            elif kind == "rng":
                leaves.append(f"_key_leaf({inputs[what]}, {stand_in.shape!r}, "
                              f"{stand_in.dtype!r})")
                continue
            elif kind == "grad":
                leaves.append(f"{leaf(what)}._grad.node")
                continue
            else:
                leaves.append(name("leaf", what))
                continue
            leaves.append(f"_node_of({tensor})" if mode == "live" else
                          f"_detached({tensor}.node)" if mode == "detached" else
                          f"{tensor}.node")
        emit(f"h = [{', '.join(leaves)}]")
        stand_ins = name("stand_ins", history.stand_ins)

    program = entry.program_entry
    if program is not None:  # None: the function computes nothing (it returns constants)
        program_var = name("entry", program)
        emit(f"{program_var}.runs += 1")
        emit(f"_STATS.last_entry = {program_var}")
        emit(f"outs = {program_var}.compiled.program.run([{', '.join(inputs)}])")

    # State, accumulated grads and arguments updated in place were written by the program into
    # their own buffers (``assign``). A grad made anew, or an argument whose update has a
    # history, gets a buffer of its own (a copy where another tensor holds the same output).
    taken = set(made)

    def out(k: int) -> str:
        if k in taken:
            return f"outs[{k}].copy()"
        taken.add(k)
        return f"outs[{k}]"

    for i, k in entry.arg_rebinds:
        emit(f"_rebind(args[{i}], {out(k)})")
        if history is not None and k in history.exprs:
            emit(f"args[{i}].node.attrs[0].source = _LazySource("
                 f"{name('expr', history.exprs[k])}, {stand_ins}, h)")
    for target, k in entry.grad_outputs:
        shape, dtype = entry.output_meta[k]
        emit(f"{leaf(target)}.grad = _mark_state(_new_tensor({out(k)}, {shape!r}, {dtype!r}))")
    for target in entry.grad_nones:
        emit(f"{leaf(target)}.grad = None")
    body.extend(fill)
    if history is not None:
        for k, expr in history.exprs.items():
            if k in made:
                emit(f"_with_history({made[k]}, {name('expr', expr)}, {stand_ins}, h)")
    emit(f"{name('entry', entry)}.replays += 1")
    if entry.return_spec[0] == "T":
        emit(f"return {returned[entry.return_spec[1]]}")
    else:
        emit(f"return _unflatten({name('spec', entry.return_spec)}, [{', '.join(returned)}])")
    return "def replay(args):\n" + "".join(f"    {line}\n" for line in body), env


def _emit_alias_guards(entry: CompiledEntry, emit: Callable[[str], None]) -> None:
    """Arguments that shared memory when traced must share it now (the program read them as one
    input); when the body updates an argument in place, the others must not share memory with
    it unless they did when traced (the program reads each before any update)."""
    root = "args[{}].node.attrs[0].root()"
    for i, j in entry.arg_aliases:
        emit(f"if {root.format(i)} is not {root.format(j)}: return MISS")
    updated = sorted(set(entry.updated_args))
    if not updated:
        return
    group = {later: first for first, later in entry.arg_aliases}
    for i in updated:
        for j in range(len(entry.signature[1])):
            if j != i and group.get(i, i) != group.get(j, j):
                emit(f"if {root.format(i)} is {root.format(j)}: return MISS")


def build_replay(entry: CompiledEntry) -> tuple[str, Callable[[list[Tensor]], Any]]:
    source, env = replay_source(entry)
    exec(compile(source, f"<fusegrad replay {id(entry):x}>", "exec"), env)  # noqa: S102
    return source, env["replay"]
