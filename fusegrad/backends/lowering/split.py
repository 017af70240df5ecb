"""Index-set splitting: an innermost loop whose masked reads test its own variable against
fixed bounds runs as consecutive segments, in each of which every such test is known.

A concatenation built from pads (an LSTM's four gate gradients into one (N, 4H) block, a stack
of time steps) reads, at each element, every part under a condition on the innermost variable
(``in1[...] if i1 >= 768 and (i1 - 768) < 256 else 0``). LLVM keeps those selects in the loop
and does not vectorise it. Cut at the bounds of the conditions (``range(0, 256)``,
``range(256, 512)``, ...), each segment reads the one part that covers it with a plain load and
the others as zeros: a (32, 1024) gate-gradient kernel of the LSTM's backward went from 116 to
9.3 us. The segments run in index order and compute the same values, so results (sums
included, when their terms add into the accumulator in order; a float32 sum's reassociable
adds may be vectorised differently in a segment: see ``numba_cpu/intrinsics.sum_step``) are
bitwise the same. Copies cost compile time, so a loop is split into at most
``MAX_SEGMENTS`` segments and ``MAX_STATEMENTS`` statements in all.

An outer loop is split the same way when the flags hoisted into it (``lowering/hoist.py``)
test only its own variable against fixed bounds: the tap axis of a channels-first im2col, (N,
C, taps, H, W), reads each of its 9 taps under a flag of the tap index, and evaluated all 9
masked reads for every element (13 ms for cnn's 4.7M-element windows); split into the 9 taps,
each segment reads one tap. In a segment a read whose condition fails is the literal 0, and
the literals are propagated: an assign of a literal is dropped, and a sum of two zero literals
is the zero literal (exact: +0 + +0 is +0), so a segment keeps the one read it needs.

The transform works on a rendered-ready LoopNest (after ``jam``): each segment's own values are
renamed (``v3`` -> ``v3_s1``) so that names stay unique in the nest.
"""
from __future__ import annotations

from dataclasses import is_dataclass, replace

from .jam import renamed
from .loopnest import (Apply, AtLeast, Below, Comment, Assign, Conjunction, Flag, Lit, Loop,
                       LoopNest, Read, Ref, Stmt, children_mapped, field_names, walk)

MAX_SEGMENTS = 8      # a 3x3 im2col's 9 taps along its innermost loop stay one loop
MAX_STATEMENTS = 160  # statements of all the segments together
MAX_OUTER_SEGMENTS = 16     # an outer loop split on its flags: a 3x3 (or 4x4) kernel's taps
MAX_OUTER_STATEMENTS = 160  # statements of all its segments together, after the folding
OUTER_READS_KEPT = 0.5      # split only when the segments' iterations do at most half the reads


def split(nest: LoopNest) -> LoopNest:
    """``nest`` with each serial innermost loop that qualifies split (see the module
    docstring), or ``nest`` itself when none does."""
    notes: list[str] = []
    body = _split_all(nest.body, notes)
    if not notes:
        return nest
    return replace(nest, body=body, listing=nest.listing + tuple(notes))


def _split_all(stmts: list[Stmt], notes: list[str], inside: bool = False) -> list[Stmt]:
    """``stmts`` with their loops split; ``inside``: they are in a segment of an outer loop,
    where no loop is split again (the copies would multiply, and Numba's compile time with
    them: about 9 ms per line; an im2col tap's masked row reads cost no more than split ones)."""
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)
        elif any(isinstance(x, Loop) for x in s.body):
            segments = None if inside else _outer_segments(s, notes)
            out.extend(replace(x, body=_split_all(x.body, notes, inside or bool(segments)))
                       for x in segments or [s])
        elif inside:
            out.append(s)
        else:
            out.extend(_segments(s, notes))
    return out


def _outer_segments(loop: Loop, notes: list[str]) -> list[Loop] | None:
    """``loop`` (which holds loops) as the segments in which each of its hoisted flags is known,
    or None when a flag tests something else or the copies would be too long."""
    if loop.parallel or not loop.hoisted:
        return None
    tests: dict[str, tuple] = {}
    for h in loop.hoisted:
        if not isinstance(h.value, Conjunction) \
                or any(_bound(c, loop.var) is None for c in h.value.conds):
            return None
        tests[h.name] = h.value.conds
    cuts = {b for conds in tests.values() for c in conds
            if loop.start < (b := _bound(c, loop.var)) < loop.extent}
    edges = [loop.start, *sorted(cuts), loop.extent]
    if len(edges) - 1 > MAX_OUTER_SEGMENTS:
        return None
    defined = {s.name for s in walk(loop.body) if isinstance(s, Assign)} | {loop.var}
    segments: list[Loop] = []
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        known = {name: all((lo >= _bound(c, loop.var)) if isinstance(c, AtLeast)
                           else (hi <= _bound(c, loop.var)) for c in conds)
                 for name, conds in tests.items()}
        names = {n: f"{n}_s{k}" for n in defined}
        body = _unused_flags_dropped(_folded([_decided(s, known) for s in loop.body], {}))
        segments.append(Loop(names[loop.var], hi, False, [renamed(s, names) for s in body],
                             start=lo))
    if sum(1 for _ in walk(segments)) > MAX_OUTER_STATEMENTS:
        return None
    reads = sum(_count_reads(segment.body) * (hi - lo)
                for segment, (lo, hi) in zip(segments, zip(edges, edges[1:])))
    if reads > OUTER_READS_KEPT * _count_reads(loop.body) * (loop.extent - loop.start):
        return None  # the copies would save few reads (a border row): not worth their compile
    notes.append(f"note: split: loop {loop.var} runs as {len(segments)} segments "
                 + " ".join(f"[{lo}, {hi})" for lo, hi in zip(edges, edges[1:]))
                 + ", in each of which its conditions are known")
    return segments


def _unused_flags_dropped(stmts: list[Stmt]) -> list[Stmt]:
    """``stmts`` without the hoisted flags that no read tests any more."""
    used = {c.name for s in walk(stmts) if not isinstance(s, Loop) for r in _reads(s)
            for c in r.conds if isinstance(c, Flag)}

    def pruned(s: Stmt) -> Stmt:
        if not isinstance(s, Loop):
            return s
        return replace(s, hoisted=[h for h in s.hoisted if h.name in used],
                       body=[pruned(x) for x in s.body])

    return [pruned(s) for s in stmts]


def _decided(x, known: dict[str, bool]):
    """``x`` with the flags in ``known`` decided: a read under a false one is 0, a true one is
    dropped from the read's conditions."""
    if isinstance(x, Read):
        if any(isinstance(c, Flag) and known.get(c.name) is False for c in x.conds):
            return Lit(0, x.dtype)
        return replace(x, conds=tuple(c for c in x.conds
                                      if not (isinstance(c, Flag) and c.name in known)))
    if isinstance(x, Loop):
        return replace(x, body=[_decided(s, known) for s in x.body],
                       hoisted=[_decided(s, known) for s in x.hoisted])
    return children_mapped(x, lambda v: _decided(v, known))


def _folded(stmts: list[Stmt], literals: dict[str, Lit | Ref],
            zero_added: set[str] | None = None) -> list[Stmt]:
    """``stmts`` with assigns of literals dropped and their literal used where they were read,
    each sum of two zero literals the zero literal, and a zero added to a value that is itself
    a sum with zero dropped (``v + 0`` is never -0, so adding 0 again changes nothing).
    ``literals``: the names found so far and what stands for them; ``zero_added``: the names
    holding a sum with zero."""
    zero_added = set() if zero_added is None else zero_added
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(replace(s, hoisted=_folded(s.hoisted, literals, zero_added),
                               body=_folded(s.body, literals, zero_added)))
            continue
        s = _substituted(s, literals)
        if isinstance(s, Assign) and isinstance(s.value, Apply) and _adds_zero(s.value):
            other = next(a for a in s.value.args if not _is_zero(a))
            if isinstance(other, Ref) and other.name in zero_added:
                literals[s.name] = other
                continue
            zero_added.add(s.name)
        if isinstance(s, Assign) and isinstance(s.value, Lit):
            literals[s.name] = s.value
        else:
            out.append(s)
    return out


def _is_zero(v: object) -> bool:
    return isinstance(v, Lit) and v.value == 0 and str(v.value) != "-0.0"


def _adds_zero(v: Apply) -> bool:
    """``v`` is a float add of a zero literal and something that is not one."""
    return v.node.op == "add" and len(v.args) == 2 and v.node.dtype.startswith("float") \
        and sum(map(_is_zero, v.args)) == 1


def _substituted(x, literals: dict[str, Lit | Ref]):
    """``x`` with the names in ``literals`` replaced, inside reads too (a gather's position, a
    condition on a computed value), and sums of two zero literals folded."""
    if isinstance(x, Ref):
        return literals.get(x.name, x)
    if isinstance(x, Loop):
        return x
    x = children_mapped(x, lambda v: _substituted(v, literals))
    if isinstance(x, Apply) and x.node.op == "add" and len(x.args) == 2 \
            and all(map(_is_zero, x.args)):
        return Lit(0, x.node.dtype)
    return x


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


def _count_reads(stmts: list[Stmt]) -> int:
    """How many reads the statements (nested loops' included) hold."""
    return sum(1 for s in walk(stmts) if not isinstance(s, Loop) for _ in _reads(s))


def _reads(x: object):
    """Every Read inside statement or value ``x``."""
    if isinstance(x, Read):
        yield x
    if isinstance(x, tuple):
        for v in x:
            yield from _reads(v)
    elif is_dataclass(x) and not isinstance(x, Loop):
        for name in field_names(type(x)):
            if name != "node":
                yield from _reads(getattr(x, name))


def _segments(loop: Loop, notes: list[str]) -> list[Stmt]:
    """``loop`` as its segments, or ``[loop]`` when it does not qualify."""
    if loop.parallel or loop.hoisted:
        return [loop]
    stmts = [s for s in loop.body if not isinstance(s, Comment)]
    cuts = {b for s in stmts for r in _reads(s) for c in r.conds
            if (b := _bound(c, loop.var)) is not None and loop.start < b < loop.extent}
    if not cuts or len(cuts) + 1 > MAX_SEGMENTS or (len(cuts) + 1) * len(stmts) > MAX_STATEMENTS:
        return [loop]
    edges = [loop.start, *sorted(cuts), loop.extent]
    defined = {s.name for s in walk(loop.body) if isinstance(s, Assign)} | {loop.var}
    out: list[Stmt] = []
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        names = {n: f"{n}_s{k}" for n in defined}
        body = [renamed(s, names)
                for s in _folded([_resolved(s, loop.var, lo, hi) for s in loop.body], {})]
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
    if isinstance(x, Loop):
        return x
    return children_mapped(x, lambda v: _resolved(v, var, lo, hi))
