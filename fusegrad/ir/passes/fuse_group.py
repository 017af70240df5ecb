"""Fusion, stage 2: group the compute nodes into kernels, each decision a record.

Nodes are placed in topological order. An elementwise node joins the kernel of an operand it
reads directly (or of a reduction it reads as ``expand(r)`` back to the full shape), merging the
kernels of several operands when their shapes fit and no kernel depends on another; a reduction
joins the kernel of its operand when that kernel is elementwise over the same shape or already
reduces the same axes. ``matmul`` and ``scatter_add`` are extern calls, each its own group.

Whether a node may join a candidate kernel is decided by named rules, each returning None (no
objection) or a :class:`Refusal`: :func:`iteration_space_rule` (the node fits the kernel's loops),
:func:`kernel_size_rule` (at most ``MAX_KERNEL_NODES`` per kernel), :func:`kernel_inputs_rule`
(at most ``MAX_KERNEL_INPUTS`` values read from memory) and :func:`acyclic_rule` (a node never
joins a kernel it must read from memory, nor one whose result it reads through another kernel:
kernels stay acyclic). A node that joins no kernel starts one; its ``STARTED``
decision carries the refusals, as the decision of a node that joins a later candidate carries
the refusals of the earlier ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..fusion_decisions import DecisionKind, FusionDecision, NodeLabels, Refusal, RefusalRule
from ..node import Node
from ..ops import EXTERN, MOVEMENT, REDUCE
from .fuse_views import Shape, is_computed, kept, movement_chain, reduce_axes, shape_str

# Most nodes one kernel computes. Numba's compile time grows faster than linearly with a
# function's length (a 1,050-node chain took 250 s and 5 GB), so a long elementwise chain (a
# deep unrolled graph) is cut into kernels of this size; the models we know peak near 25.
MAX_KERNEL_NODES = 256

# Most values one kernel reads from memory. Each is an argument of the generated function, and
# Numba's compile time grows faster than linearly with their number: a gradient summed over the
# 500 steps of an unrolled RNN made kernels of 250 arguments and a 74 s first step. Cut into
# kernels of this many inputs, the sum becomes a chain of kernels of one structure, compiled once.
MAX_KERNEL_INPUTS = 32

Space = tuple[Shape, tuple[int, ...]]  # a kernel's iteration space: full shape, reduced axes


@dataclass(eq=False)
class Group:
    """A kernel (or an extern call) being grown during grouping."""

    shape: Shape
    axes: tuple[int, ...]
    first: Node
    members: list[Node] = field(default_factory=list)
    deps: set[Group] = field(default_factory=set)
    loads: set[Node] = field(default_factory=set)  # values it reads from memory
    extern: bool = False
    decisions: list[FusionDecision] = field(default_factory=list)


def operand_refs(node: Node) -> list[tuple[Node, bool]]:
    """Operands of a body node, each with whether it must be read from memory."""
    if node.op == "gather":
        return [(node.inputs[0], True), (node.inputs[1], False)]
    return [(i, False) for i in node.inputs]


def merge_spaces(a: Space, b: Space) -> Space | None:
    """Iteration space of one kernel made of two, or None when they cannot share loops."""
    (sa, aa), (sb, ab) = a, b
    if sa == sb and (aa == ab or not aa or not ab):
        return sa, aa or ab
    if not aa and ab and sa == kept(sb, ab):
        return b
    if not ab and aa and sb == kept(sa, aa):
        return a
    return None


def fit(node: Node, space: Space) -> Space | None:
    """The kernel's iteration space once ``node`` is in it, or None if it cannot be."""
    shape, axes = space
    if node.op in REDUCE:
        own = reduce_axes(node)
        return (shape, own) if node.inputs[0].shape == shape and axes in ((), own) else None
    if node.shape == shape or (axes and node.shape == kept(shape, axes)):
        return space
    return None


def _kernel_name(target: Group, labels: NodeLabels) -> str:
    return f"the kernel started at {labels(target.first)}"


def iteration_space_rule(node: Node, target: Group, labels: NodeLabels) -> Refusal | None:
    """Refuses when ``node`` fits neither the kernel's loops nor its kept shape."""
    if fit(node, (target.shape, target.axes)) is not None:
        return None
    reducing = f" reducing {target.axes}" if target.axes else ""
    return Refusal(RefusalRule.ITERATION_SPACE, node, target.first,
                   f"{_kernel_name(target, labels)} iterates {shape_str(target.shape)}{reducing}")


def kernel_size_rule(node: Node, target: Group, labels: NodeLabels) -> Refusal | None:
    """Refuses when the kernel already holds ``MAX_KERNEL_NODES`` nodes."""
    if len(target.members) + 1 <= MAX_KERNEL_NODES:
        return None
    return Refusal(RefusalRule.KERNEL_SIZE, node, target.first,
                   f"{_kernel_name(target, labels)} holds {MAX_KERNEL_NODES} nodes, the most a "
                   "kernel may")


def kernel_inputs_rule(node: Node, target: Group, loads: set[Node], labels: NodeLabels
                       ) -> Refusal | None:
    """Refuses when the kernel with ``node`` would read more than ``MAX_KERNEL_INPUTS`` values
    from memory (``loads``: what it would read)."""
    if len(loads) <= MAX_KERNEL_INPUTS:
        return None
    return Refusal(RefusalRule.KERNEL_INPUTS, node, target.first,
                   f"{_kernel_name(target, labels)} would read {len(loads)} values from memory, "
                   f"more than the {MAX_KERNEL_INPUTS} a kernel may")


class Grouping:
    """The groups of a normalised graph, with the group each compute node belongs to."""

    def __init__(self, labels: NodeLabels):
        self.labels = labels
        self.group_of: dict[Node, Group] = {}
        self.groups: list[Group] = []

    # ------------------------------------------------------------------------- queries
    def is_accumulator(self, ref: Node, groups: list[Group], full: Shape) -> bool:
        """``ref`` is ``expand(r)`` of a reduction r of one of ``groups``, back to ``full``."""
        return ref.op == "expand" and ref.inputs[0].op in REDUCE and ref.shape == full and \
            self.group_of.get(ref.inputs[0]) in groups

    def load_deps(self, ref: Node) -> set[Group]:
        """Groups that must run before a kernel that reads ``ref`` from memory."""
        base, _ = movement_chain(ref)
        if base.op in ("buffer", "const"):
            return set()
        if base.op == "rand":
            return self.load_deps(base.inputs[0])
        return {self.group_of[base]}

    def deps(self, node: Node, groups: list[Group], full: Shape) -> set[Group]:
        """Groups ``node`` would read from if it were computed in one kernel with ``groups``."""
        deps: set[Group] = set()
        for ref, must_load in operand_refs(node):
            if must_load or ref.op in ("buffer", "const"):
                deps |= self.load_deps(ref)
            elif ref.op == "rand":
                deps |= self.load_deps(ref.inputs[0])
            elif ref.op in MOVEMENT:
                if not self.is_accumulator(ref, groups, full):
                    deps |= self.load_deps(ref)
            elif self.group_of[ref] not in groups:
                deps.add(self.group_of[ref])
        return deps

    def loads(self, node: Node, groups: list[Group], full: Shape) -> set[Node]:
        """What a kernel made of ``groups`` and ``node`` reads from memory: the loads of the
        groups and the operands of ``node`` computed elsewhere (constants are inlined)."""
        found: set[Node] = set().union(*(g.loads for g in groups))
        for ref, must_load in operand_refs(node):
            if ref.op == "const":
                continue
            if must_load or ref.op in ("buffer", "rand") or \
                    ref.op in MOVEMENT and not self.is_accumulator(ref, groups, full) or \
                    ref.op not in MOVEMENT and self.group_of.get(ref) not in groups:
                found.add(ref)
        return found

    @staticmethod
    def reaches(start: Group, targets: list[Group], seen: set[Group] | None = None) -> bool:
        """Whether ``start`` depends, directly or not, on one of ``targets``. ``seen``: groups
        known not to reach them (filled in by this search, to share among several starts)."""
        seen = set() if seen is None else seen
        stack = list(start.deps)
        while stack:
            g = stack.pop()
            if g in targets:
                return True
            if g not in seen:
                seen.add(g)
                stack.extend(g.deps)
        return False

    def candidates(self, node: Node) -> list[Group]:
        """The kernels ``node`` reads directly, reduce kernels first (so that elementwise work
        lands on a reduction's output: the epilogue)."""
        cands: list[Group] = []
        for ref, must_load in operand_refs(node):
            group = None
            if must_load:
                continue
            if ref.op == "expand" and ref.inputs[0].op in REDUCE:
                group = self.group_of[ref.inputs[0]]
                if ref.shape != group.shape:
                    group = None
            elif ref in self.group_of and not self.group_of[ref].extern:
                group = self.group_of[ref]
            if group is not None and group not in cands:
                cands.append(group)
        return sorted(cands, key=lambda g: not g.axes)

    # ------------------------------------------------------------------------- the rules
    def acyclic_rule(self, node: Node, target: Group, merged: list[Group], deps: set[Group]
                     ) -> Refusal | None:
        """Refuses when ``node`` would read one of the ``merged`` kernels (``target`` first)
        from memory, or read a kernel that depends on one of them."""
        clear: set[Group] = set()
        blocker = next((d for d in deps if d in merged or self.reaches(d, merged, clear)), None)
        if blocker is None:
            return None
        lbl, name = self.labels(node), _kernel_name(target, self.labels)
        if blocker in merged:
            return Refusal(RefusalRule.READS_ITS_RESULT, node, target.first,
                           f"{name}: {lbl} reads its result from memory")
        return Refusal(RefusalRule.CYCLE, node, target.first,
                       f"{name}: {lbl} reads the kernel started at {self.labels(blocker.first)}, "
                       "which depends on it", blocker.first)

    # ------------------------------------------------------------------------- placing
    def place(self, node: Node) -> None:
        """Put a compute node into a kernel, or start one (an extern call is its own group)."""
        if node.op in EXTERN:
            self._new_group(node, FusionDecision(
                DecisionKind.EXTERN, f"extern {self.labels(node)} is a fusion boundary", (node,)),
                extern=True)
            return
        refusals: list[Refusal] = []
        candidates = self.candidates(node)
        for target in candidates:
            refusal = iteration_space_rule(node, target, self.labels) \
                or kernel_size_rule(node, target, self.labels)
            if refusal is not None:
                refusals.append(refusal)
                continue
            merged, space = self._merge_candidates(node, target, candidates)
            deps = self.deps(node, merged, space[0])
            loads = self.loads(node, merged, space[0])
            refusal = self.acyclic_rule(node, target, merged, deps) \
                or kernel_inputs_rule(node, target, loads, self.labels)
            if refusal is not None:
                refusals.append(refusal)
                continue
            self._join(node, target, merged[1:], space, deps, loads, tuple(refusals))
            return
        self._start(node, tuple(refusals))

    def _merge_candidates(self, node: Node, target: Group, candidates: list[Group]
                          ) -> tuple[list[Group], Space]:
        """``target`` and the other candidates that can share its loops, none depending on
        another, within the kernel size; and the iteration space they share."""
        space = fit(node, (target.shape, target.axes))
        assert space is not None
        merged, size, loads = [target], len(target.members) + 1, len(target.loads)
        for other in candidates:
            if other is target or size + len(other.members) > MAX_KERNEL_NODES or \
                    loads + len(other.loads) > MAX_KERNEL_INPUTS:
                continue
            joint = merge_spaces(space, (other.shape, other.axes))
            joint = joint and fit(node, joint)
            if joint is None or any(self.reaches(other, [g]) or self.reaches(g, [other])
                                    for g in merged):
                continue
            merged.append(other)
            space = joint
            size += len(other.members)
            loads += len(other.loads)
        return merged, space

    def _start(self, node: Node, refusals: tuple[Refusal, ...]) -> None:
        lbl = self.labels(node)
        why = "; ".join(f"not fused into {r}" for r in refusals) or "no fusable producer"
        if node.op in REDUCE:
            message = f"reduce {lbl} axes {reduce_axes(node)} starts this kernel ({why})"
            decision = FusionDecision(DecisionKind.STARTED, message, (node,), refusals=refusals)
            self._new_group(node, decision, shape=node.inputs[0].shape, axes=reduce_axes(node))
        else:
            message = f"{lbl} starts this kernel over {shape_str(node.shape)} ({why})"
            self._new_group(node, FusionDecision(DecisionKind.STARTED, message, (node,),
                                                 refusals=refusals))

    def _new_group(self, node: Node, decision: FusionDecision, shape: Shape | None = None,
                   axes: tuple[int, ...] = (), extern: bool = False) -> None:
        group = Group(node.shape if shape is None else shape, axes, node, extern=extern)
        group.deps = self.deps(node, [group], group.shape) if not extern else \
            set().union(*(self.load_deps(i) for i in node.inputs))
        group.loads = self.loads(node, [group], group.shape) if not extern else set()
        group.members.append(node)
        group.decisions.append(decision)
        self.group_of[node] = group
        self.groups.append(group)

    def _join(self, node: Node, target: Group, others: list[Group], space: Space,
              deps: set[Group], loads: set[Node], refusals: tuple[Refusal, ...]) -> None:
        lbl = self.labels(node)
        was_elementwise = not target.axes
        for other in others:
            first = self.labels(other.first)
            target.decisions.append(FusionDecision(
                DecisionKind.MERGED, f"merged the kernel started at {first} "
                f"({shape_str(other.shape)}) at {lbl}: no dependency between them",
                (node, other.first)))
            target.decisions.extend(replace(d, via=(first, *d.via)) for d in other.decisions)
            target.members.extend(other.members)
            target.deps |= other.deps
            for m in other.members:
                self.group_of[m] = target
            self.groups.remove(other)
            for g in self.groups:
                if other in g.deps:
                    g.deps.discard(other)
                    g.deps.add(target)
        target.shape, target.axes = space
        target.deps |= deps
        target.deps -= {target, *others}
        target.loads = loads
        target.members.append(node)
        self.group_of[node] = target
        target.decisions.append(self._joined(node, target, was_elementwise, refusals))

    def _joined(self, node: Node, target: Group, was_elementwise: bool,
                refusals: tuple[Refusal, ...]) -> FusionDecision:
        lbl = self.labels(node)
        if node.op in REDUCE:
            start = "turns this kernel into a reduction" if was_elementwise else "joins"
            return FusionDecision(DecisionKind.REDUCTION, f"reduce {lbl} axes {reduce_axes(node)} "
                                  f"{start}: its operand {self.labels(node.inputs[0])} is computed "
                                  "here", (node, node.inputs[0]), refusals=refusals)
        if node.shape != target.shape:
            return FusionDecision(DecisionKind.FUSED_KEPT, f"fused {lbl} at the kept shape "
                                  f"{shape_str(node.shape)} (after the reductions)", (node,),
                                  refusals=refusals)
        accs = [r.inputs[0] for r, _ in operand_refs(node)
                if self.is_accumulator(r, [target], target.shape)]
        if accs:
            return FusionDecision(DecisionKind.EPILOGUE, f"epilogue: {lbl} on the full shape "
                                  f"{shape_str(node.shape)} reads the accumulator of "
                                  f"{', '.join(map(self.labels, accs))}", (node, *accs),
                                  refusals=refusals)
        return FusionDecision(DecisionKind.FUSED, f"fused {lbl} (same shape "
                              f"{shape_str(node.shape)})", (node,), refusals=refusals)


def group(order: list[Node], labels: NodeLabels) -> Grouping:
    """Group the compute nodes of ``order`` (a normalised graph in topological order).

    Args:
        order: every node of the normalised graph, inputs before the nodes that read them.
        labels: the numbering the decisions' messages use; every node of ``order`` is numbered.
    """
    grouping = Grouping(labels)
    for node in order:
        labels(node)
        if node.op in EXTERN or is_computed(node):
            grouping.place(node)
    return grouping
