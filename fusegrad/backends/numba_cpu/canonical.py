"""One text for every size-free kernel that computes the same thing (``render.size_free_extent``).

The lowering names values, orders statements and arguments by the order of the IR nodes, and
that order follows the operands' structural keys, which hold shapes. An optimizer's update of
a (256, 784) weight and of a (256,) bias is one computation, but it came out as two texts
(``a + 1.0`` in one, ``1.0 + a`` in the other; the moments read in another order), so Numba
compiled it once per parameter. Here a size-free nest is written again in an order that
depends only on what it computes:

- every value gets a signature: its code with placeholders for its operands (``op_expr``
  rendered on ``{0}``, ``{1}``), and its operands' signatures, those of a commutative op
  sorted; a read's signature is its argument's label;
- an argument's label starts as its dtype and how it is read (at the loop position or one
  fixed element), then, for three rounds, takes in where its values are read (which
  signature reads it at which operand) or, for an output, the signature of what it stores;
- outputs are ordered by label, each stored value is written depth-first with a commutative
  op's operands in signature order, inputs are numbered as first read, values as written.

Only names and orders change, so the code computes what the lowering's did; arguments that
stay tied are symmetric in the computation and either order gives the same text.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from ...ir.optable import is_commutative
from ..lowering.loopnest import (Apply, Assign, Comment, Convert, Index, Lit, Loop, LoopNest,
                                 Read, Ref, Stmt, Store, Term, Value)
from .scalar_ops import literal, op_expr

_ROUNDS = 3


def position(var: str) -> Index:
    """The flat index of element ``var`` (a loop variable) of a contiguous array."""
    return Index(0, (Term(Ref(var), 1),))


def _digest(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


class _Canon:
    def __init__(self, nest: LoopNest, loop: Loop):
        self.nest, self.loop = nest, loop
        self.at_loop = position(loop.var)
        self.defs: dict[str, Value] = {}
        self.invariant: set[str] = set()
        for s in nest.body:
            if isinstance(s, Assign):
                self.defs[s.name] = s.value
                self.invariant.add(s.name)
        self.stores: list[Store] = []
        for s in loop.body:
            if isinstance(s, Assign):
                self.defs[s.name] = s.value
            elif isinstance(s, Store):
                self.stores.append(s)
        self.params = {p.name: p for p in nest.params}
        self.label = {p.name: _digest(p.output, p.node.dtype) for p in nest.params}
        self.sigs: dict[int, str] = {}

    # ------------------------------------------------------------------ signatures
    def sig(self, v: Value) -> str:
        key = id(v)
        found = self.sigs.get(key)
        if found is None:
            found = self.sigs[key] = self._sig(v)
        return found

    def _sig(self, v: Value) -> str:
        if isinstance(v, Ref):
            return self.sig(self.defs[v.name])
        if isinstance(v, Lit):
            return _digest("lit", literal(v.value, v.dtype))
        if isinstance(v, Read):
            where = "loop" if v.index == self.at_loop else v.index.offset
            return _digest("read", self.label[v.array], where)
        if isinstance(v, Convert):
            return _digest("convert", v.dtype, self.sig(v.value))
        assert isinstance(v, Apply)
        return _digest("apply", self._template(v), *self.operands(v))

    @staticmethod
    def _template(v: Apply) -> str:
        return op_expr(v.node, ["{%d}" % k for k in range(len(v.args))])

    def operands(self, v: Apply) -> list[str]:
        sigs = [self.sig(a) for a in v.args]
        return sorted(sigs) if is_commutative(v.node) else sigs

    def ordered_args(self, v: Apply) -> tuple[Value, ...]:
        if is_commutative(v.node) and self.sig(v.args[1]) < self.sig(v.args[0]):
            return (v.args[1], v.args[0])
        return v.args

    def refine(self) -> None:
        """One round: each argument's label takes in where it is read or what it stores."""
        uses: dict[str, list[str]] = {name: [] for name in self.params}
        for value in self.defs.values():
            for parent, position, child in self._edges(value):
                child = self.resolve(child)
                if isinstance(child, Read):
                    uses[child.array].append(_digest(parent, position))
        for s in self.stores:
            uses[s.array].append(_digest("stores", self.sig(s.value)))
            stored = self.resolve(s.value)
            if isinstance(stored, Read):
                uses[stored.array].append(_digest("stored", self.label[s.array]))
        self.label = {name: _digest(self.label[name], sorted(u)) for name, u in uses.items()}
        self.sigs.clear()

    def resolve(self, v: Value) -> Value:
        while isinstance(v, Ref):
            v = self.defs[v.name]
        return v

    def _edges(self, v: Value):
        """(the reader's description, operand position, operand) of every operand in ``v``'s
        expression, down to named values (``Ref``)."""
        if isinstance(v, Apply):
            template = self._template(v)
            commutes = is_commutative(v.node)
            for k, a in enumerate(v.args):
                yield template, "c" if commutes else k, a
                if not isinstance(a, Ref):
                    yield from self._edges(a)
        elif isinstance(v, Convert):
            yield f"convert {v.dtype}", 0, v.value
            if not isinstance(v.value, Ref):
                yield from self._edges(v.value)

    # ------------------------------------------------------------------ rewriting
    def rewrite(self) -> LoopNest:
        for _ in range(_ROUNDS):
            self.refine()
        outputs = sorted((p for p in self.nest.params if p.output),
                         key=lambda p: self.label[p.name])
        out_name = {p.name: f"out{k}" for k, p in enumerate(outputs)}
        in_name: dict[str, str] = {}
        names: dict[str, str] = {}
        before: list[Stmt] = []
        inside: list[Stmt] = []
        var = "i0"

        def value(v: Value) -> Value:
            if isinstance(v, Ref):
                return Ref(define(v.name))
            if isinstance(v, Read):
                name = in_name.setdefault(v.array, f"in{len(in_name)}")
                index = position(var) if v.index == self.at_loop else v.index
                return Read(name, index, v.dtype)
            if isinstance(v, Convert):
                return Convert(value(v.value), v.dtype)
            if isinstance(v, Apply):
                return Apply(v.node, tuple(value(a) for a in self.ordered_args(v)))
            return v

        def define(name: str) -> str:
            if name not in names:
                new = value(self.defs[name])   # operands first: depth-first order
                names[name] = f"v{len(names) + 1}"
                (before if name in self.invariant else inside).append(Assign(names[name], new))
            return names[name]

        # every store after every read, as the lowering has it: an output may be the buffer
        # of an input (an update in place)
        stored = [(out_name[s.array], value(s.value))
                  for s in sorted(self.stores, key=lambda s: int(out_name[s.array][3:]))]
        inside.extend(Store(name, position(var), v) for name, v in stored)
        params = [replace(p, name=out_name[p.name]) for p in outputs]
        by_new = {new: old for old, new in in_name.items()}
        params += [replace(self.params[by_new[f"in{k}"]], name=f"in{k}")
                   for k in range(len(in_name))]
        if len(params) != len(self.nest.params):
            return self.nest   # an argument nothing reads: keep the lowering's text
        loop = Loop(var, self.loop.extent, False, inside)
        return replace(self.nest, params=tuple(params), body=before + [loop])


# Longer nests keep the lowering's text: the rewrite recurses along chains of values.
MAX_STATEMENTS = 120


def canonical(nest: LoopNest) -> LoopNest:
    """``nest`` (size-free: see ``render.size_free_extent``) with its names and orders made
    from what it computes; the comment statements are dropped (the IR listing stays)."""
    loop = next(s for s in nest.body if isinstance(s, Loop))
    if any(isinstance(s, Comment) for s in loop.body) or any(
            p.output and not any(isinstance(s, Store) and s.array == p.name for s in loop.body)
            for p in nest.params) or len(nest.body) + len(loop.body) > MAX_STATEMENTS:
        return nest
    return _Canon(nest, loop).rewrite()

