"""Unroll-and-jam of a reduction's kept loop: ``JAM`` kept positions per pass, their sums
interleaved.

A float sum adds its terms one after another into one accumulator, in index order, and the
results must not depend on the loop nest (``test_float_sums_add_in_index_order_whatever_the_kernel``).
Each add then waits for the one before it (about 3 cycles on the CPUs we measure), which bounds
a long reduction per kept position. Jamming keeps each accumulator's order and runs ``JAM`` of
them side by side in the same pass, so the adds of different positions overlap: a channel sum
over 32x32x32 went from 2.5 to 1.2 ms. Results are bitwise the same.

The transform works on the LoopNest (names unique, see loopnest.py): the innermost loop that
declares scalar accumulators, ``for i1 in range(E)``, becomes ``for i1j in range(E // JAM)``
with ``i1_0 = i1j * JAM + 0`` ... and every statement of its body copied per position with its
own names. Loops that accumulate are shared by the copies (their bodies interleave them); other
loops and statements run once per copy, in order. A copy reads only the positions it writes
(reduction kernels never write in place; numba_cpu/program_assigns.py), so the new order reads
nothing the old one did not.
"""
from __future__ import annotations

from dataclasses import is_dataclass, replace

from .loopnest import (Accumulate, Accumulator, AccRef, Apply, Assign, Comment, Flag, Index,
                       Loop, LoopNest, Ref, Stmt, Term, field_names, walk)

JAM = 4            # kept positions per pass
JAM_MIN = 256      # reduced elements per position below which the out-of-order core overlaps
                   # consecutive positions' chains by itself
JAM_MAX_STATEMENTS = 20  # a longer body is not copied: Numba's compile time grows with the
                         # copies (a log-softmax kernel's 1.6 s became 6.2 s), and a cold first
                         # step pays for every kernel


def jam(nest: LoopNest) -> LoopNest:
    """``nest`` with its accumulating kept loop jammed (see the module docstring), or ``nest``
    itself when it has none that qualifies."""
    loop = _target(nest.body)
    if loop is None:
        return nest
    defined = {s.name for s in walk(loop.hoisted + loop.body)
               if isinstance(s, (Assign, Accumulator))}
    names = [{n: f"{n}_{u}" for n in defined | {loop.var}} for u in range(JAM)]
    outer = f"{loop.var}j"
    body: list[Stmt] = [Assign(f"{loop.var}_{u}", Index(u, (Term(Ref(outer), JAM),)))
                        for u in range(JAM)]
    body += [renamed(h, m) for m in names for h in loop.hoisted]  # its flags, per position
    body += _jammed(loop.body, names)
    new = Loop(outer, loop.extent // JAM, loop.parallel, body)
    note = (f"note: jammed: loop {loop.var} runs {JAM} positions per pass ({loop.var}_0.."
            f"{loop.var}_{JAM - 1}), their reductions interleaved, each in its own order")
    return replace(nest, body=_swap(nest.body, loop, new), listing=nest.listing + (note,))


def _target(stmts: list[Stmt]) -> Loop | None:
    """The loop (serial or parallel) whose body declares scalar accumulators that a loop inside it fills
    over at least ``JAM_MIN`` elements, with an extent ``JAM`` divides."""
    for s in walk(stmts):
        if not isinstance(s, Loop) or s.extent % JAM or s.extent < JAM:
            continue
        accs = [a for a in s.body if isinstance(a, Accumulator)]
        if not accs or any(a.count is not None for a in accs):
            continue
        if any(isinstance(a, Accumulator) and a.count is not None for a in walk(s.body)):
            return None
        if _too_long(s):
            return None
        if max((_elements(loop) for loop in s.body if isinstance(loop, Loop)
                and _accumulates(loop)), default=0) >= JAM_MIN:
            return s
        return None
    return None


def _too_long(loop: Loop) -> bool:
    """Whether copying ``loop``'s body ``JAM`` times would cost more compile time than the
    overlap saves: more than ``JAM_MAX_STATEMENTS`` statements, or a call the renderer inlines
    (a transcendental helper, tens of statements each)."""
    stmts = [s for s in walk(loop.hoisted + loop.body) if not isinstance(s, Comment)]
    return len(stmts) > JAM_MAX_STATEMENTS or any(
        isinstance(s, Assign) and isinstance(s.value, Apply)
        and s.value.node.op in ("exp", "tanh", "erf", "log", "sin", "cos") for s in stmts)


def _elements(loop: Loop) -> int:
    """Iterations of the innermost statements of ``loop``'s accumulating nest."""
    inner = [s for s in loop.body if isinstance(s, Loop) and _accumulates(s)]
    return loop.extent * max((_elements(s) for s in inner), default=1)


def _accumulates(loop: Loop) -> bool:
    return any(isinstance(s, Accumulate) for s in walk(loop.body))


def _jammed(stmts: list[Stmt], names: list[dict[str, str]]) -> list[Stmt]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop) and _accumulates(s):
            hoisted = [renamed(h, m) for h in s.hoisted for m in names]
            out.append(Loop(s.var, s.extent, s.parallel, _jammed(s.body, names), hoisted))
        elif isinstance(s, Comment):
            out.append(s)
        else:
            out.extend(renamed(s, m) for m in names)
    return out


def _swap(stmts: list[Stmt], old: Loop, new: Loop) -> list[Stmt]:
    out: list[Stmt] = []
    for s in stmts:
        if s is old:
            out.append(new)
        elif isinstance(s, Loop):
            out.append(Loop(s.var, s.extent, s.parallel, _swap(s.body, old, new), s.hoisted))
        else:
            out.append(s)
    return out


_NAMED = {Ref: ("name",), AccRef: ("name",), Flag: ("name",), Assign: ("name",),
          Accumulator: ("name",), Accumulate: ("best",)}


def renamed(x, names: dict[str, str]):
    """``x`` (a statement or value) with the local names in ``names`` replaced; arrays, IR
    nodes and literals as they are."""
    if isinstance(x, Loop):
        return replace(x, body=[renamed(s, names) for s in x.body],
                       hoisted=[renamed(h, names) for h in x.hoisted])
    if isinstance(x, tuple):
        return tuple(renamed(v, names) for v in x)
    if not is_dataclass(x):
        return x
    changes = {}
    for name in field_names(type(x)):
        v = getattr(x, name)
        if name in _NAMED.get(type(x), ()) and isinstance(v, str):
            changes[name] = names.get(v, v)
        elif isinstance(x, Apply) and name == "node":
            continue
        elif is_dataclass(v) or isinstance(v, tuple):
            changes[name] = renamed(v, names)
    return replace(x, **changes) if changes else x

