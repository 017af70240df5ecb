"""The replay of one ``fusegrad.compile`` entry, generated as straight-line Python.

A replay runs the replay hooks and input checks, gathers the program's inputs, runs the program
and rebinds its outputs to the tensors they update. Each of these is one line of the generated
function — no loop over slot kinds, no per-call lookups of what is known when the entry is
recorded — so the Python around the kernels costs a few microseconds per call.
``CompiledEntry.replay_source`` holds the function (``explain()`` prints it).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.node import Node
from . import capture
from .autograd import LazySource
from .realize import STATS, realize
from .rng import next_key
from .pytree import unflatten
from .grad_mode import is_grad_enabled
from .tensor import PENDING, Tensor, _detached

if TYPE_CHECKING:
    from .compile import CompiledEntry


def _data(t: Tensor):
    """The flat array holding ``t``'s value (computing it first if it is pending)."""
    if t.node.op != "buffer":
        realize(t)
    return t.node.attrs[0].data


class _Miss:
    """What a replay returns when its guards do not match the call (no program ran)."""

    def __repr__(self) -> str:
        return "MISS"


MISS = _Miss()


def _realize_pending() -> None:
    """Compute every pending tensor first: the program reads state from buffers."""
    realize(*PENDING.values())


def _gone() -> None:
    raise RuntimeError("a tensor captured by a compiled function no longer exists")


def _new_tensor(array, shape: tuple[int, ...], dtype: str) -> Tensor:
    return Tensor._from_node(ops.buffer(Buffer(shape, dtype, array)))


def _key_leaf(key, shape: tuple[int, ...], dtype: str) -> Node:
    return ops.buffer(Buffer(shape, dtype, key))


def _with_history(t: Tensor, expr: Node, stand_ins: list[Node], leaves: list[Node]) -> None:
    """Make the returned ``t`` require grad, its expression built if a backward needs it."""
    t.requires_grad = True
    t._is_leaf = False
    t.node.attrs[0].source = LazySource(expr, stand_ins, leaves)


def _new_grad(leaf: Tensor, array, shape: tuple[int, ...], dtype: str) -> None:
    leaf.grad = capture.mark_state(_new_tensor(array, shape, dtype))


def replay_source(entry: CompiledEntry) -> tuple[str, dict[str, Any]]:
    """The source of ``replay(args)`` for ``entry`` and the names it refers to."""
    env: dict[str, Any] = {"_data": _data, "_gone": _gone, "_new_tensor": _new_tensor,
                           "_new_grad": _new_grad, "_unflatten": unflatten,
                           "_next_key": next_key, "_STATS": STATS, "MISS": MISS,
                           "Tensor": Tensor, "PENDING": PENDING, "_grad_enabled": is_grad_enabled,
                           "_realize_pending": _realize_pending, "_wrap": Tensor._from_node,
                           "_key_leaf": _key_leaf, "_with_history": _with_history,
                           "_detached": _detached,
                           "_MODES_SET": capture.MODES_SET}
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
            emit(f"{var} = _data({source})")
        return loaded[kind, key]

    def state(ref: Any) -> str:  # each state tensor fetched once: a parameter is read and updated
        key = id(ref())
        if key not in state_var:
            var = state_var[key] = f"s{len(state_var)}"
            emit(f"{var} = {name('ref', ref)}()")
            emit(f"if {var} is None: _gone()")
        return state_var[key]

    # guards: the signature (the tensors' shapes, dtypes and requires_grad, grad mode), the
    # modules' training modes and the grads that must be None
    tensors = entry.signature[1]
    emit(f"if len(args) != {len(tensors)}: return MISS")
    for i, (shape, dtype, requires_grad) in enumerate(tensors):
        emit(f"t = args[{i}]")
        emit("if not isinstance(t, Tensor): return MISS")
        emit(f"if t.node.shape != {shape!r} or t.node.dtype != {dtype!r} or "
             f"t.requires_grad is not {requires_grad!r}: return MISS")
    emit(f"if _grad_enabled() is not {entry.signature[2]!r}: return MISS")
    if entry.modules:  # read again only after some module's mode was set
        seen = name("modes_seen", [-1])
        emit(f"if _MODES_SET[0] != {seen}[0]:")
        for ref, mode in zip(entry.modules, entry.modes):
            emit(f"    m = {name('module', ref)}()  # {type(ref()).__name__}")
            emit(f"    if m is not None and m.training is not {mode!r}: return MISS")
        emit(f"    {seen}[0] = _MODES_SET[0]")
    for ref, must_be_none in entry.grad_guards:
        emit(f"leaf = {name('leaf', ref)}()")
        emit(f"if leaf is not None and (leaf._grad is None) is not {must_be_none!r}: "
             "return MISS")
    emit("if PENDING: _realize_pending()")
    for i, j in entry.arg_aliases:
        emit(f"if args[{i}].node.attrs[0].root() is not args[{j}].node.attrs[0].root(): "
             "return MISS")

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
        else:
            inputs.append("")
    for j in entry.rng_order:  # random keys are drawn in the order the trace drew them
        inputs[j] = f"k{j}"
        emit(f"k{j} = _next_key({int(entry.slots[j].ref)})")

    # Returned tensors are made before the program runs and given their arrays after it: the
    # Python that follows the kernels runs on cold caches, so it is kept to plain stores.
    returned: list[str] = []
    fill: list[str] = []
    made: dict[int, str] = {}  # output index -> its tensor (a value returned twice is one tensor)
    for kind, what in entry.returns:
        if kind == "out":
            if what not in made:
                made[what] = f"r{what}"
                shape, dtype = entry.output_meta[what]
                emit(f"r{what} = _new_tensor(None, {shape!r}, {dtype!r})")
                fill.append(f"r{what}.node.attrs[0].data = outs[{what}]")
            returned.append(made[what])
        elif kind == "arg":
            returned.append(f"args[{what}]")
        elif kind == "arg_detached":
            returned.append(f"args[{what}].detach()")
        elif kind == "state":
            returned.append(state(what))
        elif kind == "state_detached":
            returned.append(f"{state(what)}.detach()")
        elif kind == "same":
            returned.append(name("outside", what))
        else:
            returned.append(f"_wrap({name('leaf', what)})")

    history = entry.history
    if history is not None and history.exprs:
        # the leaves a backward of the returned values will read: this call's, before updates
        leaves = []
        for (kind, what, detached), stand_in in zip(history.leaves, history.stand_ins):
            if kind == "arg":
                expr = f"args[{what}].node"
            elif kind == "state":
                expr = f"{state(what)}.node"
            elif kind == "rng":
                expr = f"_key_leaf({inputs[what]}, {stand_in.shape!r}, {stand_in.dtype!r})"
            else:
                expr = name("leaf", what)
            leaves.append(f"_detached({expr})" if detached else expr)
        emit(f"h = [{', '.join(leaves)}]")

    program = entry.program_entry
    if program is not None:  # None: the function computes nothing (it returns constants)
        program_var = name("entry", program)
        emit(f"{program_var}.runs += 1")
        emit(f"_STATS.last_entry = {program_var}")
        emit(f"outs = {program_var}.compiled.program.run([{', '.join(inputs)}])")

    for target, k in entry.state_outputs:
        if isinstance(target, int):  # an argument updated in place
            emit(f"args[{target}]._adopt(outs[{k}])")
            continue
        var = state_var.get(id(target()))
        if var is not None:
            emit(f"{var}._adopt(outs[{k}])")
        else:  # an output that no input read: the tensor may be gone, as uncompiled
            emit(f"t = {name('ref', target)}()")
            emit(f"if t is not None: t._adopt(outs[{k}])")
    for ref, k in entry.grad_outputs:
        shape, dtype = entry.output_meta[k]
        emit(f"leaf = {name('ref', ref)}()")
        emit("if leaf is not None:")
        emit("    g = leaf._grad")
        emit(f"    if g is None: _new_grad(leaf, outs[{k}], {shape!r}, {dtype!r})")
        emit(f"    else: g._adopt(outs[{k}])")
    body.extend(fill)
    if history is not None:
        for k, expr in history.exprs.items():
            emit(f"_with_history({made[k]}, {name('expr', expr)}, "
                 f"{name('stand_ins', history.stand_ins)}, h)")
    emit(f"{name('entry', entry)}.replays += 1")
    if entry.return_spec[0] == "T":
        emit(f"return {returned[entry.return_spec[1]]}")
    else:
        emit(f"return _unflatten({name('spec', entry.return_spec)}, [{', '.join(returned)}])")
    return "def replay(args):\n" + "".join(f"    {line}\n" for line in body), env


def build_replay(entry: CompiledEntry) -> tuple[str, Callable[[list[Tensor]], Any]]:
    source, env = replay_source(entry)
    exec(compile(source, f"<fusegrad replay {id(entry):x}>", "exec"), env)  # noqa: S102
    return source, env["replay"]
