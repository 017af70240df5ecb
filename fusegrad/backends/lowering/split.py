"""Index-set splitting: an innermost loop whose masked reads test its own variable against
fixed bounds runs as consecutive segments, in each of which every such test is known.

A concatenation built from pads (an LSTM's four gate gradients into one (N, 4H) block, a stack
of time steps) reads, at each element, every part under a condition on the innermost variable
(``in1[...] if i1 >= 768 and (i1 - 768) < 256 else 0``). LLVM keeps those selects in the loop
and does not vectorise it. Cut at the bounds of the conditions (``range(0, 256)``,
``range(256, 512)``, ...), each segment reads the one part that covers it with a plain load and
the others as zeros: a (32, 1024) gate-gradient kernel of the LSTM's backward went from 116 to
9.3 us. The segments run in index order and compute the same values, so results (sums
included) are bitwise the same. Copies cost compile time, so a loop is split into at most
``MAX_SEGMENTS`` segments and ``MAX_STATEMENTS`` statements in all.

The transform works on a rendered-ready LoopNest (after ``jam``): each segment's own values are
renamed (``v3`` -> ``v3_s1``) so that names stay unique in the nest.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

from .jam import renamed
from .loopnest import (AtLeast, Below, Comment, Assign, Lit, Loop, LoopNest, Read, Ref, Stmt,
                       walk)

MAX_SEGMENTS = 8      # a 3x3 im2col's 9 taps along its innermost loop stay one loop
MAX_STATEMENTS = 160  # statements of all the segments together


def split(nest: LoopNest) -> LoopNest:
    """``nest`` with each serial innermost loop that qualifies split (see the module
    docstring), or ``nest`` itself when none does."""
    notes: list[str] = []
    body = _split_all(nest.body, notes)
    if not notes:
        return nest
    return replace(nest, body=body, listing=nest.listing + tuple(notes))


def _split_all(stmts: list[Stmt], notes: list[str]) -> list[Stmt]:
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)
        elif any(isinstance(x, Loop) for x in s.body):
            out.append(replace(s, body=_split_all(s.body, notes)))
        else:
            out.extend(_segments(s, notes))
    return out


def _bound(cond: object, var: str) -> int | None:
    """Where ``cond`` changes value along loop ``var`` (None if it is not a fixed bound on it):
    ``var >= start`` from ``start`` on, ``(var - start) // step < count`` (``step`` >= 1) below
    ``start + step * count``."""
    if getattr(cond, "var", None) != Ref(var):
        return None
    if isinstance(cond, AtLeast):
        return cond.start
    if isinstance(cond, Below) and cond.step >= 1 and cond.count >= 0:
        return cond.start + cond.step * cond.count
    return None


def _reads(x: object):
    """Every Read inside statement or value ``x``."""
    if isinstance(x, Read):
        yield x
    if isinstance(x, tuple):
        for v in x:
            yield from _reads(v)
    elif is_dataclass(x) and not isinstance(x, Loop):
        for f in fields(x):
            if f.name != "node":
                yield from _reads(getattr(x, f.name))


def _segments(loop: Loop, notes: list[str]) -> list[Stmt]:
    """``loop`` as its segments, or ``[loop]`` when it does not qualify."""
    stmts = [s for s in loop.body if not isinstance(s, Comment)]
    cuts = {b for s in stmts for r in _reads(s) for c in r.conds
            if (b := _bound(c, loop.var)) is not None and loop.start < b < loop.extent}
    if loop.parallel or loop.hoisted or not cuts or len(cuts) + 1 > MAX_SEGMENTS \
            or (len(cuts) + 1) * len(stmts) > MAX_STATEMENTS:
        return [loop]
    edges = [loop.start, *sorted(cuts), loop.extent]
    defined = {s.name for s in walk(loop.body) if isinstance(s, Assign)} | {loop.var}
    out: list[Stmt] = []
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        names = {n: f"{n}_s{k}" for n in defined}
        body = [renamed(_resolved(s, loop.var, lo, hi), names) for s in loop.body]
        out.append(Loop(names[loop.var], hi, False, body, start=lo))
    notes.append(f"note: split: loop {loop.var} runs as {len(edges) - 1} segments "
                 + " ".join(f"[{lo}, {hi})" for lo, hi in zip(edges, edges[1:]))
                 + ", each reading only the parts that cover it")
    return out


def _resolved(x, var: str, lo: int, hi: int):
    """``x`` with the conditions on ``var`` decided for ``lo <= var < hi``: a read none of whose
    conditions fails reads plainly (or under the others), one with a failing condition is 0."""
    if isinstance(x, Read):
        kept = []
        for c in x.conds:
            b = _bound(c, var)
            if b is None:
                kept.append(c)
                continue
            holds = (lo >= b) if isinstance(c, AtLeast) else (hi <= b)
            if not holds:
                return Lit(0, x.dtype)
        return replace(x, conds=tuple(kept), index=_resolved(x.index, var, lo, hi))
    if isinstance(x, tuple):
        return tuple(_resolved(v, var, lo, hi) for v in x)
    if not is_dataclass(x) or isinstance(x, Loop):
        return x
    changes = {f.name: _resolved(getattr(x, f.name), var, lo, hi) for f in fields(x)
               if f.name != "node" and (is_dataclass(getattr(x, f.name))
                                        or isinstance(getattr(x, f.name), tuple))}
    return replace(x, **changes) if changes else x
