"""Where each ``assign`` of a program writes: straight into its target, or by a copy at the end.

An assign's value normally lives in an array of its own and is copied into the target after
every item has run (every read of the target sees the old value). When the value is written by
an item of the program and nothing reads the target's old value after that item starts (or the
item, an elementwise kernel, reads the target only at the element it writes), the item's output
*is* the target's array and the copy goes. ``plan_assigns`` decides this once per program, from
the Schedule alone, and says why in an ``AssignDecision``.

Two inputs may share memory (a parameter and the ``detach()`` an optimizer reads it through are
two leaves over one array), which the structural key does not tell. The plan therefore treats
an input leaf that is not itself a target and has the target's size and dtype as if it were
the target when only the writing item, or items before it, read it (the decision's
``shares``), and takes any other leaf to be another array; every run of a program with an
in-place assign checks that the inputs share memory in no other way (``inputs_share_memory``);
when they do, it runs its copying loop.
"""
from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...ir.node import Node
from ...ir.schedule import Extern, Kernel, Schedule
from ...ir.view import View


class AssignReason(enum.Enum):
    """Why an assign is stored in place or copied (the value is the words ``describe`` prints)."""

    STORED_IN_PLACE = "its value is written straight into the target"
    UPDATED_IN_PLACE = "its value is written straight into the target by a kernel that reads " \
                       "the target's old value through the argument it writes (one array: " \
                       "the loop stays vectorised)"
    VALUE_IS_TARGET = "the value is the target's own"
    VALUE_IS_INPUT = "the value is an input of the program, not written by an item"
    VALUE_IS_RESULT = "the value is also a result of the program"
    VALUE_TO_SEVERAL_TARGETS = "the value is written into more than one target"
    TARGET_WRITTEN_TWICE = "the target is written by more than one assign"
    TARGET_READ_AT_END = "the target's old value is a result or the value of another assign"
    TARGET_READ_LATER = "a later item reads the target's old value"
    WRITER_READS_TARGET_ELSEWHERE = "the writing item reads the target away from the element it " \
                                    "writes"
    TARGET_SHARES_A_TARGET = "the target shares memory with another target in this call"
    CHECKED_AFTER_ITEMS = "the program checks indices after its items have run: the targets " \
                          "stay untouched until the check has passed (GPU)"


@dataclass(frozen=True)
class AssignDecision:
    """How one ``assign`` output of a program is carried out.

    Attributes:
        output: the position of the assign among the program's outputs.
        target: the buffer leaf written.
        value: the node whose value is written (``Schedule.outputs[output]``).
        reason: see ``AssignReason``; ``in_place`` tells which side it is on.
        writer: the index of the item writing the value, None when no item writes it.
        reader: the item (or, for ``TARGET_READ_AT_END``, None) whose read forced the copy.
        shares: the other input leaves the plan allows to be the target's memory (in the
            schedule's input order).
        through: for ``UPDATED_IN_PLACE``, the leaves the writing kernel reads through its
            output (the target, or a leaf of ``shares``, which must then be exactly the
            target's memory in a call that runs in place).
    """

    output: int
    target: Node
    value: Node
    reason: AssignReason
    writer: int | None = None
    reader: int | None = None
    shares: tuple[Node, ...] = ()
    through: tuple[Node, ...] = ()

    @property
    def in_place(self) -> bool:
        return self.reason in (AssignReason.STORED_IN_PLACE, AssignReason.UPDATED_IN_PLACE,
                               AssignReason.VALUE_IS_TARGET)

    def describe(self, names: dict[Node, str]) -> str:
        """One line: ``assign #3 -> x2 (f32[256,784]): in place (item 5): <why>``."""
        how = "in place" if self.in_place else "copied at the end"
        where = [f"written by item {self.writer}"] if self.writer is not None else []
        if self.reader is not None:
            where.append(f"read by item {self.reader}")
        detail = f" ({', '.join(where)})" if where else ""
        return (f"assign #{self.output} -> {names.get(self.target, '?')} "
                f"({self.target.type_str}): {how}{detail}: {self.reason.value}")


def plan_assigns(schedule: Schedule, targets: dict[int, Node], simd: bool = True,
                 alias: Callable[[Node, Node], bool] | None = None, guarded: bool = False,
                 same_memory: Callable[[Node, Node], bool] | None = None
                 ) -> list[AssignDecision]:
    """Decide, for each assign output (``targets``: output position -> target leaf), whether the
    item writing its value writes straight into the target.

    Args:
        simd: whether a kernel that reads the target it writes reads it through its output
            (``UPDATED_IN_PLACE``, rendered by ``lowering.through``: over two arguments of one
            array LLVM's runtime overlap check fails and the loop runs unvectorised; the CPU's
            concern, a GPU thread reads its element, then writes it, either way).
        alias: ``alias(leaf, target)``: whether a leaf may be the target's memory; by default
            ``may_alias`` (a plan made once for any arrays). A plan made for the arrays of one
            call passes what they are.
        guarded: every run checks which inputs share a target's memory (``inputs_share_memory``
            with the decisions' ``shares``): a leaf read after the value is written, or at the
            end, is then taken to be another array (two parameters of one shape are two arrays)
            and a call in which it is the target's runs the copying loop instead.
        same_memory: ``same_memory(leaf, target)``: whether a leaf the writer reads is the
            target's very memory in the call the plan is made for; the writer then reads that
            leaf through its output too (``AssignDecision.through``), and every run checks that
            it still is (``inputs_share_memory``'s ``exact``). Without it, only the target
            itself is read through the output.
    """
    alias = alias or may_alias
    outputs = schedule.outputs
    target_set = set(targets.values())
    values = Counter(outputs[i] for i in targets)
    written = Counter(targets.values())
    returned = {n for i, n in enumerate(outputs) if i not in targets}
    read_at_end = returned | {outputs[i] for i in targets}
    leaves = {n for n in (*schedule.inputs, *read_at_end, *target_set) if n.op == "buffer"}
    writer: dict[Node, int] = {}
    readers: dict[Node, list[int]] = {}
    for t, item in enumerate(schedule.items):
        for node in item.outputs if isinstance(item, Kernel) else (item.node,):
            writer[node] = t
        loads = item.loads.values() if isinstance(item, Kernel) else item.loads
        for src in dict.fromkeys(load.src for load in loads):
            readers.setdefault(src, []).append(t)

    decisions = []
    for i, target in targets.items():
        value = outputs[i]
        w = writer.get(value)
        shares = {n for n in leaves - target_set if alias(n, target)}
        if guarded and w is not None:
            shares = {n for n in shares if n not in read_at_end
                      and all(t <= w for t in readers.get(n, ()))}
        same = {target} | shares
        read_by = sorted({t for n in same for t in readers.get(n, [])})
        later = [t for t in read_by if w is not None and t > w]
        if value is target:
            reason = AssignReason.VALUE_IS_TARGET
        elif written[target] > 1:
            reason = AssignReason.TARGET_WRITTEN_TWICE
        elif w is None:
            reason = AssignReason.VALUE_IS_INPUT
        elif value in returned:
            reason = AssignReason.VALUE_IS_RESULT
        elif values[value] > 1:
            reason = AssignReason.VALUE_TO_SEVERAL_TARGETS
        elif same & read_at_end:
            reason = AssignReason.TARGET_READ_AT_END
        elif later:
            reason = AssignReason.TARGET_READ_LATER
        elif w in read_by and not _reads_only_its_own_element(schedule.items[w], same):
            reason = AssignReason.WRITER_READS_TARGET_ELSEWHERE
        else:
            reason = AssignReason.STORED_IN_PLACE
        through: tuple[Node, ...] = ()
        if reason is AssignReason.STORED_IN_PLACE and simd and w in read_by:
            through = tuple(n for n in dict.fromkeys((target, *schedule.inputs))
                            if w in readers.get(n, ()) and (n is target or (
                                n in shares and same_memory is not None
                                and same_memory(n, target))))
            if through:
                reason = AssignReason.UPDATED_IN_PLACE
        reader = later[0] if reason is AssignReason.TARGET_READ_LATER else (
            w if reason is AssignReason.WRITER_READS_TARGET_ELSEWHERE else None)
        decisions.append(AssignDecision(i, target, value, reason, w, reader,
                                        tuple(n for n in schedule.inputs if n in shares),
                                        through))
    return decisions


def may_alias(leaf: Node, target: Node) -> bool:
    """Whether the plan treats ``leaf`` as possibly the target's own memory: same size and dtype
    (a detached view of a buffer has both; memory shared otherwise falls back at run time)."""
    return leaf.size == target.size and leaf.dtype == target.dtype


def _reads_only_its_own_element(item: Kernel | Extern, same: set[Node]) -> bool:
    """Whether ``item`` reads the target (any of ``same``) only at the flat element it writes, in
    the same loop iteration: an elementwise kernel (one loop over its shape, every value computed
    before the first store; ``lowering.lower``) loading the target contiguously over that shape,
    and never as the table of a gather. An extern or a reduce kernel reading the target does
    not."""
    if not isinstance(item, Kernel) or item.reduce_axes:
        return False
    identity = View.contiguous(item.shape)
    gathered = {n.inputs[0] for n in item.body if n.op == "gather"}
    return all(load.view == identity and node not in gathered
               for node, load in item.loads.items() if load.src in same)


def inputs_share_memory(inputs: list[np.ndarray], written: tuple[int, ...],
                        shares: tuple[tuple[int, ...], ...],
                        exact: tuple[tuple[int, ...], ...] = (), memo: list | None = None
                        ) -> bool:
    """Whether the inputs share memory in a way the plan did not allow for: the target of an
    in-place assign (a position in ``written``) sharing its memory owner (the array itself, or
    the array it views) with an input other than those its decision allows (``shares``, one
    tuple of positions per written target: leaves over the same array that only the writing
    item, or an item before it, reads; an optimizer reads a parameter through one), or an input
    of ``exact`` (one tuple per written target: the leaves its writer reads through its output,
    ``AssignDecision.through``) that is not the target's very memory. Called by every run of a
    program with an in-place assign.

    ``memo`` (the program's own list) keeps the last answer with the arrays it was given: a
    training step passes the same parameter and state arrays on every call, so the answer is
    looked up by their identities (the arrays are held, so no identity is reused meanwhile)."""
    if memo is not None:
        ids = list(map(id, inputs))
        if ids == memo[0]:
            return memo[2]
    owners = [_owner(a) for a in inputs]
    shared = False
    if len(set(owners)) != len(owners):
        groups: dict[int, list[int]] = {}
        for k, owner in enumerate(owners):
            groups.setdefault(owner, []).append(k)
        shared = any(j != k and j not in allowed
                     for k, allowed in zip(written, shares) for j in groups[owners[k]]) or \
            any(owners[j] != owners[k] or not _same_memory(inputs[j], inputs[k])
                for k, same in zip(written, exact) for j in same)
    elif any(exact):
        shared = True   # a leaf read through a target's output is another array
    if memo is not None:
        memo[:] = [ids, tuple(inputs), shared]
    return shared


def same_memory_now(leaf: Node, target: Node) -> bool:
    """Whether two buffer leaves hold the same elements of memory in the call a program is
    compiled for: one buffer is a view of the other (``Buffer.alias_of``: a detached leaf, or a
    data-less stand-in of one, ``realize.prepare``), or their host arrays are the same memory."""
    a, b = leaf.attrs[0], target.attrs[0]
    if a.root() is b.root():
        return True
    return isinstance(a.data, np.ndarray) and isinstance(b.data, np.ndarray) and \
        _same_memory(a.data, b.data)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether contiguous arrays ``a`` and ``b`` are the same elements of memory."""
    return a is b or (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                      and a.nbytes == b.nbytes and a.dtype == b.dtype)


def _owner(array: np.ndarray) -> int:
    """The id of the object at the end of ``array``'s chain of ``base``s: the memory's owner
    (through views of views, and the stand-in object ``as_strided`` views keep)."""
    while True:
        base = getattr(array, "base", None)
        if base is None:
            return id(array)
        array = base


def assign_lines(decisions: list[AssignDecision], names: dict[Node, str]) -> list[str]:
    """The ``assigns`` section of a program's description: a count, then one line each."""
    if not decisions:
        return []
    stored = sum(d.in_place for d in decisions)
    return [f"assigns: {stored} of {len(decisions)} stored in place, "
            f"{len(decisions) - stored} copied at the end of the run"] + \
        [f"  {d.describe(names)}" for d in decisions]
