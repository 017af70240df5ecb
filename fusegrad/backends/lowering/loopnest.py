"""The loop-nest IR: what one fused Kernel computes, as loops, scalars and memory accesses.

Lowering (``lower.py``) decides everything here; a renderer (``numba_cpu/render.py``) only prints
it. Nothing in this IR names a target: scalar ops keep their IR node (the renderer picks the
code), accumulators carry the dtype they add in, loops say whether they may run in parallel.

Names (``Ref.name``, ``Loop.var``, ``Accumulator.name``) are unique within one LoopNest. Index
expressions and mask conditions are objects, so a pass can ask which loop variables a condition
reads (``Cond.names``) instead of parsing source.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Union

from ...ir.node import Node


# ----------------------------------------------------------------------------- scalar values
@dataclass(frozen=True)
class Ref:
    """A named scalar: a loop variable, a computed value, an accumulator or a flag."""

    name: str


@dataclass(frozen=True)
class Lit:
    """A constant of ``dtype``."""

    value: float | bool
    dtype: str


@dataclass(frozen=True)
class Term:
    """One summand of a flat offset: ``((var - start) // step) * stride``.

    ``var`` is a loop variable, or the value a gather reads its position from (an index
    that depends on no loop variable when it is not a ``Ref``).
    """

    var: Value
    stride: int
    start: int = 0
    step: int = 1


@dataclass(frozen=True)
class Index:
    """A flat element offset: ``offset + sum(terms)``."""

    offset: int = 0
    terms: tuple[Term, ...] = ()


@dataclass(frozen=True)
class Divisible:
    """Condition ``(var - start) % step == 0``: a strided mask's position is one it keeps."""

    var: Value
    start: int
    step: int

    def names(self) -> frozenset[str]:
        return _names(self.var)


@dataclass(frozen=True)
class AtLeast:
    """Condition ``var >= start``."""

    var: Value
    start: int

    def names(self) -> frozenset[str]:
        return _names(self.var)


@dataclass(frozen=True)
class Below:
    """Condition ``((var - start) // step) < count``: fewer than ``count`` kept positions lie before."""

    var: Value
    start: int
    step: int
    count: int

    def names(self) -> frozenset[str]:
        return _names(self.var)


@dataclass(frozen=True)
class Never:
    """Condition that is always false (a mask that keeps nothing)."""

    def names(self) -> frozenset[str]:
        return frozenset()


Cond = Union[Divisible, AtLeast, Below, Never]


@dataclass(frozen=True)
class Flag:
    """A condition computed once into ``name`` (by a ``Loop.hoisted`` statement)."""

    name: str

    def names(self) -> frozenset[str]:
        return frozenset({self.name})


def _names(var: Value) -> frozenset[str]:
    return frozenset({var.name}) if isinstance(var, Ref) else frozenset()


@dataclass(frozen=True)
class Read:
    """Element ``index`` of array ``array``; zero of ``dtype`` wherever a condition is false."""

    array: str
    index: Index
    dtype: str
    conds: tuple[Cond | Flag, ...] = ()


@dataclass(frozen=True)
class AccRef:
    """An accumulator: a scalar, or element ``index`` of an array of accumulators."""

    name: str
    index: Index | None = None


@dataclass(frozen=True)
class Convert:
    """``value`` converted to ``dtype`` (an accumulator rounded to its reduction's dtype)."""

    value: Value
    dtype: str


@dataclass(frozen=True)
class Apply:
    """The elementwise IR ``node`` applied to ``args`` (its operands in the order given)."""

    node: Node
    args: tuple[Value, ...]


@dataclass(frozen=True)
class Uniform:
    """The counter-based uniform random number of ``dtype`` at position ``counter + index``
    of the stream ``seed`` (see ir/random.py)."""

    dtype: str
    seed: Ref
    counter: Ref
    index: Index


@dataclass(frozen=True)
class Conjunction:
    """All of ``conds`` hold."""

    conds: tuple[Cond, ...]


Value = Union[Ref, Lit, Index, Read, AccRef, Convert, Apply, Uniform, Conjunction]


# ----------------------------------------------------------------------------- statements
@dataclass(frozen=True)
class Assign:
    """``name = value``."""

    name: str
    value: Value


@dataclass(frozen=True)
class Store:
    """Element ``index`` of output ``array`` becomes ``value``."""

    array: str
    index: Index
    value: Value


@dataclass(frozen=True)
class Accumulator:
    """Declares accumulator ``name`` of ``dtype`` starting at ``init``; an array of ``count``
    of them when ``count`` is not None (one per kept position)."""

    name: str
    dtype: str
    init: float | bool
    count: int | None = None


@dataclass(frozen=True)
class Accumulate:
    """One step of a reduction: ``acc`` takes in ``value`` (of ``dtype``).

    ``kind`` is ``sum`` (add; logical or on bool), ``max`` (NaN, once seen, stays) or ``argmax``
    (``best`` holds the largest value so far, the first NaN wins; ``acc`` takes ``position``).
    """

    kind: str
    acc: AccRef
    value: Value
    dtype: str
    best: str | None = None
    position: Index | None = None


@dataclass(frozen=True)
class CheckIndex:
    """Stop with an IndexError ``message`` unless ``0 <= value < size``."""

    value: Value
    size: int
    message: str


@dataclass(frozen=True)
class Comment:
    """A line for the reader of the generated code."""

    text: str


@dataclass
class Loop:
    """``var`` runs over ``range(extent)`` (``range(start, extent)`` for a segment of a split
    loop, ``lowering/split.py``); ``parallel``: iterations may run at the same time.

    ``hoisted`` runs at the start of each iteration, before ``body``: the flags of conditions
    that depend on no inner loop.
    """

    var: str
    extent: int
    parallel: bool = False
    body: list[Stmt] = field(default_factory=list)
    hoisted: list[Assign] = field(default_factory=list)
    start: int = 0


Stmt = Union[Assign, Store, Accumulator, Accumulate, CheckIndex, Comment, Loop]


@dataclass(frozen=True)
class Param:
    """An argument of the kernel function: a flat array ``name`` holding ``node`` from element
    ``base`` on; ``output``: the kernel writes it."""

    name: str
    node: Node
    base: int
    output: bool


@dataclass
class LoopNest:
    """One kernel, lowered.

    Attributes:
        kernel: the Kernel's name in the Schedule.
        function: the function's name: the same for the same code wherever the kernel sits.
        params: outputs first, then one input per distinct (buffer, base), in first-read order.
        parallel: whether some loop is parallel.
        listing: the IR the kernel came from, one line per node, for a comment block.
        prelude: statements before any loop (random streams' seed and counter).
        body: the loops.
        random: whether some value is a ``Uniform``.
    """

    kernel: str
    function: str
    params: tuple[Param, ...]
    parallel: bool
    listing: tuple[str, ...]
    prelude: list[Stmt]
    body: list[Stmt]
    random: bool


def walk(stmts: list[Stmt]) -> Iterator[Stmt]:
    """Every statement in ``stmts``, loops' hoisted flags and bodies included, outer first."""
    for s in stmts:
        yield s
        if isinstance(s, Loop):
            yield from s.hoisted
            yield from walk(s.body)


@functools.cache
def field_names(cls: type) -> tuple[str, ...]:
    """The field names of dataclass ``cls``, found once (``dataclasses.fields`` builds them anew
    on every call, and the loop-nest rewrites call it per statement and value)."""
    return tuple(f.name for f in fields(cls))


def children_mapped(x, fn):
    """``x`` (a tuple, statement or value) with ``fn`` applied to each element or field that is
    a tuple or a dataclass (IR nodes left as they are)."""
    if isinstance(x, tuple):
        return tuple(fn(v) for v in x)
    if not is_dataclass(x):
        return x
    changes = {name: fn(getattr(x, name)) for name in field_names(type(x))
               if name != "node" and (is_dataclass(getattr(x, name))
                                      or isinstance(getattr(x, name), tuple))}
    return replace(x, **changes) if changes else x
