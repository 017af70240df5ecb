"""Fusion, stage 3: build the Schedule from the groups.

Every value read across a kernel boundary becomes a Load through a View composed from its
movement chain; whatever is read is materialised by the item that computes it (or by a copy,
fill or random kernel for views, constants and random numbers); items are ordered by their
dependencies and named. Each materialised node gets a ``MATERIALISED`` decision naming its
readers, and a graph output that is its base's buffer unchanged an ``OUTPUT_VIEW`` decision.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..fusion_decisions import DecisionKind, FusionDecision, NodeLabels
from ..node import Node
from ..ops import MOVEMENT, REDUCE
from ..schedule import Extern, Kernel, Load, Schedule
from ..view import View
from .fuse_group import Group, Grouping, operand_refs
from .fuse_views import Shape, blas_friendly, compose, movement_chain, shape_str


@dataclass(eq=False)
class _Item:
    """An item of the schedule being built."""

    kind: str  # kernel, extern, copy, fill, rand
    key: int
    shape: Shape
    axes: tuple[int, ...] = ()
    body: list[Node] = field(default_factory=list)
    loads: dict[Node, Load] = field(default_factory=dict)
    outputs: list[Node] = field(default_factory=list)
    node: Node | None = None
    extern_loads: list[Load] = field(default_factory=list)
    deps: set[_Item] = field(default_factory=set)
    decisions: list[FusionDecision] = field(default_factory=list)


class _Builder:
    def __init__(self, grouping: Grouping, order: list[Node], labels: NodeLabels,
                 decisions: list[FusionDecision]):
        self.grouping = grouping
        self.labels = labels
        self.pos = {n: i for i, n in enumerate(order)}
        self.schedule_decisions = decisions
        self.items: list[_Item] = []
        self.producer: dict[Node, _Item] = {}
        self.why: dict[Node, list[tuple[str, _Item | None]]] = {}

    def _item(self, kind: str, key: int, shape: Shape, **fields: object) -> _Item:
        item = _Item(kind, key, shape, **fields)
        self.items.append(item)
        return item

    def _materialise(self, node: Node, consumer: _Item | None, why: str) -> None:
        """Make ``node`` own a buffer written by one item, before ``consumer`` runs."""
        if node.op == "buffer":
            return
        item = self.producer.get(node)
        if item is None:
            item = self._aux_item(node)
        if consumer is not None:
            consumer.deps.add(item)
        self.why.setdefault(node, [])
        if (why, consumer) not in self.why[node]:
            self.why[node].append((why, consumer))

    def _aux_item(self, node: Node) -> _Item:
        """A kernel whose only job is to write ``node``: a copy, a fill or random numbers."""
        key = self.pos[node]
        kind = {"const": "fill", "rand": "rand"}.get(node.op, "copy")
        item = self._item(kind, key, node.shape, outputs=[node])
        self.producer[node] = item
        if kind == "rand":
            item.loads[node.inputs[0]] = self._load(node.inputs[0], item, "random key")
        elif kind == "copy":
            item.loads[node] = self._load(node, item, "copy source")
        return item

    def _load(self, ref: Node, consumer: _Item, why: str) -> Load:
        src, view, breaks = compose(ref)
        if breaks:
            mv = breaks[-1]
            self._materialise(src, consumer, f"the view chain breaks at {self.labels(mv)}; read by")
        else:
            through = f"read through {', '.join(map(self.labels, movement_chain(ref)[1]))} by" \
                if ref.op in MOVEMENT else "read by"
            self._materialise(src, consumer, f"{why}: {through}" if why else through)
        return Load(src, view)

    def _kernel_loads(self, item: _Item, group: Group) -> None:
        members = set(group.members)
        self._recompute(item, group, members)
        for node in item.body:
            for ref, must_load in operand_refs(node):
                if ref in item.loads or ref.op == "const" or ref in members:
                    continue
                if ref.op == "rand" and not must_load:
                    if ref.inputs[0] not in item.loads:
                        item.loads[ref.inputs[0]] = self._load(ref.inputs[0], item, "random key")
                elif must_load or not self.grouping.is_accumulator(ref, [group], group.shape):
                    item.loads[ref] = self._load(ref, item, "gather source" if must_load else "")

    def _recompute(self, item: _Item, group: Group, members: set[Node]) -> None:
        """Put into ``item`` the cheap full-shape operands it would read from another kernel
        (``recomputable``), adding them to ``members``: it computes them itself instead of
        loading them, and their kernel need not store them for it."""
        extra: list[Node] = []
        for node in item.body:
            for ref, must_load in operand_refs(node):
                if must_load or ref in members or ref.shape != item.shape \
                        or self.grouping.group_of.get(ref) in (None, group) \
                        or self.grouping.group_of[ref].extern or not recomputable(ref):
                    continue
                members.add(ref)
                extra.append(ref)
                item.decisions.append(FusionDecision(
                    DecisionKind.RECOMPUTED, f"recomputed {self.labels(ref)} here instead of "
                    f"loading it: it reads {source_elements(ref)} elements to make {ref.size}",
                    (ref,)))
        if extra:
            item.body = sorted(item.body + extra, key=self.pos.__getitem__)

    def _extern_load(self, ref: Node, item: _Item) -> Load:
        view = compose(ref)[1]
        if view.masks is not None or (item.node.op == "matmul" and not blas_friendly(view)):
            reason = "a padded view" if view.masks is not None else "a strided view BLAS cannot take"
            self._materialise(ref, item, f"{reason}, read by extern")
            return Load(ref, View.contiguous(ref.shape))
        return self._load(ref, item, "extern operand")

    def build(self, outputs: tuple[Node, ...]) -> Schedule:
        made: dict[Group, _Item] = {}
        for group in self.grouping.groups:
            key = min(self.pos[m] for m in group.members)
            if group.extern:
                item = self._item("extern", key, group.shape, node=group.first)
            else:
                item = self._item("kernel", key, group.shape, axes=group.axes,
                                  body=sorted(group.members, key=self.pos.__getitem__))
            item.decisions = list(group.decisions)
            for m in group.members:
                self.producer[m] = item
            made[group] = item
        for group, item in made.items():
            if group.extern:
                item.extern_loads = [self._extern_load(i, item) for i in group.first.inputs]
            else:
                self._kernel_loads(item, group)
        held = [self._output(i, o) for i, o in enumerate(outputs)]
        for node in self.why:
            item = self.producer[node]
            if node not in item.outputs:
                item.outputs.append(node)
        for item in self.items:
            if item.kind == "kernel":
                item.outputs.sort(key=self.pos.__getitem__)
        ordered = self._order()
        names = {item: _name(k, item) for k, item in enumerate(ordered)}
        self._decide_materialised(names)
        sched_items: list[Kernel | Extern] = []
        for item in ordered:
            if item.kind == "extern":
                sched_items.append(Extern(names[item], item.node, tuple(item.extern_loads),
                                          decisions=item.decisions))
            else:
                sched_items.append(Kernel(names[item], item.shape, item.axes, tuple(item.body),
                                          item.loads, tuple(item.outputs),
                                          decisions=item.decisions))
        reads = {ld.src for it in self.items for ld in [*it.loads.values(), *it.extern_loads]}
        ids = self.labels.ids
        inputs = sorted((n for n in reads | set(held) if n.op == "buffer"), key=ids.__getitem__)
        return Schedule(sched_items, inputs, held, decisions=self.schedule_decisions,
                        node_ids=dict(ids))

    def _output(self, index: int, node: Node) -> Node:
        """The node whose buffer holds graph output ``index`` (materialising it)."""
        if node.op == "buffer":
            return node
        if node.op in MOVEMENT:
            src, view, breaks = compose(node)
            if not breaks and view.is_contiguous and src.size == node.size:
                self.schedule_decisions.append(FusionDecision(
                    DecisionKind.OUTPUT_VIEW, f"output {index} ({self.labels(node)}) is the buffer "
                    f"of {self.labels(src)} read as {node.type_str}: no copy", (node, src)))
                self._materialise(src, None, "graph output")
                return src
        self._materialise(node, None, "graph output")
        return node

    def _order(self) -> list[_Item]:
        """Items in dependency order; among ready items, the one whose nodes come first."""
        users: dict[_Item, list[_Item]] = {item: [] for item in self.items}
        pending = {item: len(item.deps) for item in self.items}
        for item in self.items:
            for dep in item.deps:
                users[dep].append(item)
        index = {item: k for k, item in enumerate(self.items)}
        ready = [(item.key, index[item], item) for item in self.items if not pending[item]]
        heapq.heapify(ready)
        ordered = []
        while ready:
            _, _, item = heapq.heappop(ready)
            ordered.append(item)
            for user in users[item]:
                pending[user] -= 1
                if not pending[user]:
                    heapq.heappush(ready, (user.key, index[user], user))
        assert len(ordered) == len(self.items), "fusion produced a cycle between kernels"
        return ordered

    def _decide_materialised(self, names: dict[_Item, str]) -> None:
        for node, reasons in self.why.items():
            item = self.producer[node]
            parts = [f"{why} {names[user]}" if user is not None else why for why, user in reasons]
            item.decisions.append(FusionDecision(
                DecisionKind.MATERIALISED,
                f"materialised {self.labels(node)} {node.type_str}: " + "; ".join(parts), (node,),
                readers=tuple(names[user] if user is not None else "" for _, user in reasons)))


# Elementwise ops cheaper to compute again than to read back: no transcendental, no division.
CHEAP = frozenset({"eq", "ne", "lt", "le", "where", "cast", "add", "sub", "mul", "neg", "abs",
                   "maximum", "minimum"})
# How many times the elements a recomputed node reads must fit into the elements it makes.
RECOMPUTE_RATIO = 8


def recomputable(node: Node) -> bool:
    """Whether a kernel that reads ``node`` at its full shape should compute it again rather
    than read it from memory: a cheap elementwise op whose operands are constants or small
    values broadcast to its shape (together ``RECOMPUTE_RATIO`` times smaller), such as a
    cross-entropy's one-hot mask, ``target[i] == class[j]``, which attn's program stored as
    10M bools and read back in the gradient's kernel."""
    return node.op in CHEAP and source_elements(node) * RECOMPUTE_RATIO <= node.size


def source_elements(node: Node) -> int:
    """How many elements ``node``'s operands hold before they are broadcast or viewed
    (constants hold none: they are inlined)."""
    return sum(movement_chain(i)[0].size for i in node.inputs if i.op != "const")


def _name(index: int, item: _Item) -> str:
    if item.kind == "extern":
        return f"k{index}_{item.node.op}_{shape_str(item.node.shape)}"
    if item.kind != "kernel":
        return f"k{index}_{item.kind}_{shape_str(item.shape)}"
    ops = [n.op for n in item.body if n.op in REDUCE]
    ops += [n.op for n in reversed(item.body) if n.op not in REDUCE]
    main = list(dict.fromkeys(ops))[:3]
    return f"k{index}_{'_'.join(main)}_{shape_str(item.shape)}"


def build(grouping: Grouping, order: list[Node], outputs: tuple[Node, ...], labels: NodeLabels,
          decisions: list[FusionDecision]) -> Schedule:
    """The Schedule of ``grouping``.

    Args:
        grouping: the groups of the normalised graph.
        order: the normalised graph's nodes in topological order (it orders bodies and items).
        outputs: the normalised graph's outputs.
        labels: the numbering for messages; it becomes ``Schedule.node_ids``.
        decisions: the decisions not tied to one item so far (normalisation); the Schedule's
            ``OUTPUT_VIEW`` decisions are appended to it.
    """
    return _Builder(grouping, order, labels, decisions).build(outputs)
