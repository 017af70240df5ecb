"""Fusion: partition a graph into kernels and extern calls, producing a Schedule.

The pass runs in three steps.

1. *Normalise*, a rewrite that keeps every value: reductions over size-1 axes are identities
   (``argmax`` over one gives zeros); movement ops and gathers of constants are constants; a
   movement chain that reads its base unchanged is its base; reshapes that only add or drop
   size-1 dims move after the elementwise ops and reductions they feed; ``expand`` of a small
   elementwise expression is pushed below it (``expand(log(s))`` becomes ``log(expand(s))``), so
   that an epilogue reads a reduction's accumulator instead of a materialised kept-shape value;
   and a transposed product ``(a @ b)^T`` used nowhere else is computed as ``b^T @ a^T``.
2. *Group* the compute nodes, in topological order, into kernels. An elementwise node joins the
   kernel of an operand it reads directly (or of a reduction it reads as ``expand(r)`` back to
   the full shape), merging the kernels of several operands when their shapes fit and no
   kernel depends on another; a reduction joins the kernel of its operand when that kernel is
   elementwise over the same shape or already reduces the same axes. A node never joins a kernel
   it must read from memory (through a view, as a gather source or a random key), nor one whose
   result it reads through another kernel: kernels stay acyclic. ``matmul`` and
   ``scatter_add`` are extern calls.
3. *Build* the Schedule: every value read across a kernel boundary becomes a Load through a View
   composed from its movement chain; whatever is read is materialised by the item that computes
   it (or by a copy, fill or random kernel for views, constants and random numbers); items are
   ordered by their dependencies and named.

Every decision is recorded as a note on the item it concerns, or on the Schedule.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..graph import Graph, consumers, toposort
from ..node import Node
from ..ops import ELEMENTWISE, EXTERN, MOVEMENT, REDUCE, const, expand, matmul, permute, reshape
from ..schedule import Extern, Kernel, Load, Schedule
from ..view import View

# Largest elementwise expression recomputed per element under an ``expand`` (instead of being
# materialised at its smaller shape and read back).
PUSH_EXPAND_LIMIT = 8

# Most nodes one kernel computes. Numba's compile time grows faster than linearly with a
# function's length (a 1,050-node chain took 250 s and 5 GB), so a long elementwise chain (a
# deep unrolled graph) is cut into kernels of this size; the models we know peak near 25.
MAX_KERNEL_NODES = 256

Shape = tuple[int, ...]


def fuse(graph: Graph) -> Schedule:
    """Partition ``graph`` into kernels and extern calls.

    Args:
        graph: any valid graph, optimised or not.

    Returns:
        A Schedule that meets the contract in ``fusegrad.ir.schedule``. Each fusion decision
        (and each refusal) is a readable line in ``Kernel.notes``, ``Extern.notes`` or
        ``Schedule.notes``; ``Schedule.node_ids`` numbers nodes as ``format_graph(graph)`` does.
    """
    return _Fuser(graph).run()


# ----------------------------------------------------------------------------- helpers
def shape_str(shape: Shape) -> str:
    """``32x10`` for (32, 10); ``scalar`` for ()."""
    return "x".join(map(str, shape)) if shape else "scalar"


def reduce_axes(node: Node) -> tuple[int, ...]:
    """The axes a ``sum``/``max``/``argmax`` node reduces."""
    axes = node.attrs[0]
    return axes if isinstance(axes, tuple) else (axes,)


def _kept(shape: Shape, axes: tuple[int, ...]) -> Shape:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _apply(view: View, mv: Node) -> View | None:
    if mv.op == "reshape":
        return view.reshape(mv.shape)
    if mv.op == "permute":
        return view.permute(mv.attrs[0])
    if mv.op == "expand":
        return view.expand(mv.shape)
    if mv.op == "slice":
        return view.slice(mv.attrs[0])
    return view.pad(mv.shape, mv.attrs[0])


def _chain(node: Node) -> tuple[Node, list[Node]]:
    """The non-movement base under ``node`` and the movement ops from the base up to ``node``."""
    chain = []
    while node.op in MOVEMENT:
        chain.append(node)
        node = node.inputs[0]
    chain.reverse()
    return node, chain


def compose(node: Node) -> tuple[Node, View, list[Node]]:
    """The view through which ``node`` reads memory: ``(src, view, breaks)``.

    ``breaks`` lists the movement nodes whose input had to be materialised because the view
    could not compose through them; ``src`` is then the input of the last one.
    """
    base, chain = _chain(node)
    src, view, breaks = base, View.contiguous(base.shape), []
    for mv in chain:
        nxt = _apply(view, mv)
        if nxt is None:
            # over a contiguous view every movement op composes, so this cannot fail twice
            breaks.append(mv)
            src = mv.inputs[0]
            nxt = _apply(View.contiguous(src.shape), mv)
            assert nxt is not None
        view = nxt
    return src, view, breaks


def _blas_friendly(view: View) -> bool:
    """Whether a matmul operand's matrices are dense in row- or column-major order."""
    if view.masks is not None:
        return False
    (m, k), (sm, sk) = view.shape[-2:], view.strides[-2:]
    rows = (k == 1 or sk == 1) and (m == 1 or sm == k)
    cols = (m == 1 or sm == 1) and (k == 1 or sk == m)
    return rows or cols


def _merge_params(a: tuple[Shape, tuple[int, ...]], b: tuple[Shape, tuple[int, ...]]
                  ) -> tuple[Shape, tuple[int, ...]] | None:
    """Iteration space of one kernel made of two, or None when they cannot share loops."""
    (sa, aa), (sb, ab) = a, b
    if sa == sb and (aa == ab or not aa or not ab):
        return sa, aa or ab
    if not aa and ab and sa == _kept(sb, ab):
        return b
    if not ab and aa and sb == _kept(sa, aa):
        return a
    return None


def _is_unit_reshape(node: Node) -> bool:
    """A reshape that only adds or drops size-1 dims (the elements keep their order and index)."""
    return [d for d in node.shape if d != 1] == [d for d in node.inputs[0].shape if d != 1]


def _computed(node: Node) -> bool:
    return node.op in ELEMENTWISE or node.op in REDUCE or node.op == "gather"


def _push_expand(top: Node, mid: Shape | None, shape: Shape) -> Node | None:
    """``expand(reshape(top, mid), shape)`` (no reshape when ``mid`` is None) rebuilt as the
    elementwise ops of ``top`` over expanded operands, or None when the elementwise expression
    is too large to recompute per element."""
    cone: set[Node] = set()
    stack = [top]
    while stack:
        n = stack.pop()
        if n in cone or n.op not in ELEMENTWISE:
            continue
        cone.add(n)
        if len(cone) > PUSH_EXPAND_LIMIT:
            return None
        stack.extend(n.inputs)
    done: dict[Node, Node] = {}

    def widen(n: Node) -> Node:
        if n not in done:
            if n.op == "const":
                done[n] = const(n.attrs[0], shape, n.dtype, n.loc)
            elif n in cone:
                done[n] = Node(n.op, tuple(widen(i) for i in n.inputs), shape, n.dtype, n.attrs,
                               n.loc)
            elif n.op == "expand" and mid is None:
                done[n] = expand(n.inputs[0], shape, n.loc)
            else:
                done[n] = expand(n if mid is None else reshape(n, mid, n.loc), shape, n.loc)
        return done[n]

    return widen(top)


@dataclass(eq=False)
class _Group:
    """A kernel (or an extern call) being grown during grouping."""

    shape: Shape
    axes: tuple[int, ...]
    first: Node
    members: list[Node] = field(default_factory=list)
    deps: set[_Group] = field(default_factory=set)
    extern: bool = False
    notes: list[str] = field(default_factory=list)
    item: _Item | None = None


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
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- the pass
class _Fuser:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.ids: dict[Node, int] = {n: i for i, n in enumerate(toposort(graph.outputs))}
        self.next_id = len(self.ids)
        self.norm: dict[Node, Node] = {}
        self.schedule_notes: list[str] = []
        self.group_of: dict[Node, _Group] = {}
        self.groups: list[_Group] = []
        self.items: list[_Item] = []
        self.producer: dict[Node, _Item] = {}
        self.why: dict[Node, list[tuple[str, _Item | None]]] = {}

    def label(self, node: Node) -> str:
        if node not in self.ids:
            self.ids[node] = self.next_id
            self.next_id += 1
        return f"%{self.ids[node]} {node.op}"

    def run(self) -> Schedule:
        outputs = self._normalise(self.graph.outputs)
        self.order = toposort(outputs)
        self.pos = {n: i for i, n in enumerate(self.order)}
        for node in self.order:
            self.label(node)
            if node.op in EXTERN:
                self._new_group(node, f"extern {self.label(node)} is a fusion boundary", extern=True)
            elif node.op in ELEMENTWISE or node.op in REDUCE or node.op == "gather":
                self._place(node)
        return self._build(outputs)

    # ------------------------------------------------------------------------- normalise
    def _normalise(self, outputs: tuple[Node, ...]) -> list[Node]:
        order = toposort(outputs)
        self.uses = {n: len(u) for n, u in consumers(order).items()}
        for out in outputs:
            self.uses[out] += 1
        for node in order:
            inputs = tuple(self.norm[i] for i in node.inputs)
            rebuilt = node if inputs == node.inputs else \
                Node(node.op, inputs, node.shape, node.dtype, node.attrs, node.loc)
            # a copy over rewritten operands keeps its number, so dumps line up with format_graph
            self.ids.setdefault(rebuilt, self.ids[node])
            current = rebuilt
            for _ in range(8):
                step = self._rule(current, node)
                if step is None:
                    break
                new, reason = step
                self.schedule_notes.append(f"normalised {self.label(current)} -> {self.label(new)}: "
                                           f"{reason}")
                current = new
            self.norm[node] = current
        return [self.norm[o] for o in outputs]

    def _rule(self, node: Node, orig: Node) -> tuple[Node, str] | None:
        """One value-preserving rewrite of ``node`` (``orig`` is its node in the input graph)."""
        op = node.op
        if op in ("sum", "max", "argmax"):
            x = node.inputs[0]
            axes = tuple(a for a in reduce_axes(node) if x.shape[a] != 1)
            if not axes:
                identity = x if op != "argmax" else const(0, node.shape, node.dtype, node.loc)
                return identity, "reduction over size-1 axes is an identity"
            if op != "argmax" and axes != node.attrs[0]:
                return Node(op, node.inputs, node.shape, node.dtype, (axes,), node.loc), \
                    "size-1 axes dropped from the reduction"
            if x.op == "reshape" and _is_unit_reshape(x) and _computed(x.inputs[0]):
                return self._pull_reshape_reduce(node, axes), "the reshape of its operand moved after it"
            return None
        if op in ELEMENTWISE:
            pulled = self._pull_reshape(node)
            return (pulled, "the reshapes of its operands moved after it") if pulled is not None else None
        if op == "gather" and node.inputs[0].op == "const":
            return const(node.inputs[0].attrs[0], node.shape, node.dtype, node.loc), \
                "gather of a constant"
        if op not in MOVEMENT:
            return None
        x = node.inputs[0]
        if x.op == "const" and (op != "pad" or not x.attrs[0]):
            return const(x.attrs[0], node.shape, node.dtype, node.loc), f"{op} of a constant"
        src, view, breaks = compose(node)
        if not breaks and src.shape == node.shape and view == View.contiguous(src.shape):
            return src, "the view reads its base unchanged"
        if op == "reshape" and x.op == "reshape":
            return reshape(x.inputs[0], node.shape, node.loc), "consecutive reshapes folded"
        if op == "expand":
            mid = None
            if x.op == "reshape" and _is_unit_reshape(x):
                x, mid = x.inputs[0], x.shape
            if x.op in ELEMENTWISE:
                pushed = _push_expand(x, mid, node.shape)
                if pushed is not None:
                    return pushed, "expand pushed below elementwise ops"
        nd = len(node.shape)
        if op == "permute" and x.op == "matmul" and node.attrs[0] == (*range(nd - 2), nd - 1, nd - 2) \
                and orig.op == "permute" and x is self.norm[orig.inputs[0]] \
                and self.uses[orig.inputs[0]] == 1:
            a, b = x.inputs
            return matmul(permute(b, node.attrs[0]), permute(a, node.attrs[0]), x.loc), \
                "transposed product computed directly (b^T a^T)"
        return None

    @staticmethod
    def _pull_reshape(node: Node) -> Node | None:
        """``f(reshape(a), reshape(b))`` as ``reshape(f(a, b))`` when every reshape only adds or
        drops size-1 dims, so that ``f`` can join the kernel that computes ``a``."""
        srcs = []
        for i in node.inputs:
            if i.op == "reshape" and _is_unit_reshape(i):
                srcs.append(i.inputs[0])
            elif i.op != "const":
                return None
        if not srcs or len({s.shape for s in srcs}) != 1 or not any(map(_computed, srcs)):
            return None
        shape = srcs[0].shape
        inputs = tuple(i.inputs[0] if i.op == "reshape" else const(i.attrs[0], shape, i.dtype, i.loc)
                       for i in node.inputs)
        return reshape(Node(node.op, inputs, shape, node.dtype, node.attrs, node.loc), node.shape,
                       node.loc)

    @staticmethod
    def _pull_reshape_reduce(node: Node, axes: tuple[int, ...]) -> Node:
        """``reduce(reshape(x))`` as ``reshape(reduce(x))`` for a reshape of size-1 dims only."""
        x = node.inputs[0].inputs[0]
        outer = [d for d, n in enumerate(node.inputs[0].shape) if n != 1]
        inner = [d for d, n in enumerate(x.shape) if n != 1]
        mapped = tuple(sorted(dict(zip(outer, inner))[a] for a in axes))
        attrs = (mapped,) if node.op != "argmax" else (mapped[0],)
        reduced = Node(node.op, (x,), _kept(x.shape, mapped), node.dtype, attrs, node.loc)
        return reshape(reduced, node.shape, node.loc)

    # ------------------------------------------------------------------------- group
    def _refs(self, node: Node) -> list[tuple[Node, bool]]:
        """Operands of a body node, each with whether it must be read from memory."""
        if node.op == "gather":
            return [(node.inputs[0], True), (node.inputs[1], False)]
        return [(i, False) for i in node.inputs]

    def _is_accumulator(self, ref: Node, groups: list[_Group], full: Shape) -> bool:
        """``ref`` is ``expand(r)`` of a reduction r of the kernel, back to its full shape."""
        return ref.op == "expand" and ref.inputs[0].op in REDUCE and ref.shape == full and \
            self.group_of.get(ref.inputs[0]) in groups

    def _load_deps(self, ref: Node) -> set[_Group]:
        """Groups that must run before a kernel that reads ``ref`` from memory."""
        base, _ = _chain(ref)
        if base.op in ("buffer", "const"):
            return set()
        if base.op == "rand":
            return self._load_deps(base.inputs[0])
        return {self.group_of[base]}

    def _deps(self, node: Node, groups: list[_Group], full: Shape) -> set[_Group]:
        """Groups ``node`` would read from if it were computed in one kernel with ``groups``."""
        deps: set[_Group] = set()
        for ref, must_load in self._refs(node):
            if must_load or ref.op in ("buffer", "const"):
                deps |= self._load_deps(ref)
            elif ref.op == "rand":
                deps |= self._load_deps(ref.inputs[0])
            elif ref.op in MOVEMENT:
                if not self._is_accumulator(ref, groups, full):
                    deps |= self._load_deps(ref)
            elif self.group_of[ref] not in groups:
                deps.add(self.group_of[ref])
        return deps

    def _reaches(self, start: _Group, targets: list[_Group]) -> bool:
        """Whether ``start`` depends, directly or not, on one of ``targets``."""
        seen: set[_Group] = set()
        stack = list(start.deps)
        while stack:
            g = stack.pop()
            if g in targets:
                return True
            if g not in seen:
                seen.add(g)
                stack.extend(g.deps)
        return False

    def _fit(self, node: Node, params: tuple[Shape, tuple[int, ...]]
             ) -> tuple[Shape, tuple[int, ...]] | None:
        """The kernel's iteration space once ``node`` is in it, or None if it cannot be."""
        shape, axes = params
        if node.op in REDUCE:
            own = reduce_axes(node)
            return (shape, own) if node.inputs[0].shape == shape and axes in ((), own) else None
        if node.shape == shape or (axes and node.shape == _kept(shape, axes)):
            return params
        return None

    def _candidates(self, node: Node) -> list[_Group]:
        cands: list[_Group] = []
        for ref, must_load in self._refs(node):
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
        # a reduce kernel first: elementwise work then lands on its output (the epilogue)
        return sorted(cands, key=lambda g: not g.axes)

    def _place(self, node: Node) -> None:
        lbl = self.label(node)
        refusals: list[str] = []
        candidates = self._candidates(node)
        for target in candidates:
            params = self._fit(node, (target.shape, target.axes))
            tname = f"the kernel started at {self.label(target.first)}"
            if params is None:
                refusals.append(f"{tname} iterates {shape_str(target.shape)}"
                                + (f" reducing {target.axes}" if target.axes else ""))
                continue
            size = len(target.members) + 1
            if size > MAX_KERNEL_NODES:
                refusals.append(f"{tname} holds {MAX_KERNEL_NODES} nodes, the most a kernel may")
                continue
            merged = [target]
            for other in candidates:
                if other is target or size + len(other.members) > MAX_KERNEL_NODES:
                    continue
                p = _merge_params(params, (other.shape, other.axes))
                p = p and self._fit(node, p)
                if p is None or any(self._reaches(other, [g]) or self._reaches(g, [other])
                                    for g in merged):
                    continue
                merged.append(other)
                params = p
                size += len(other.members)
            deps = self._deps(node, merged, params[0])
            blocker = next((d for d in deps if d in merged or self._reaches(d, merged)), None)
            if blocker is not None:
                how = "reads its result from memory" if blocker in merged else \
                    f"reads the kernel started at {self.label(blocker.first)}, which depends on it"
                refusals.append(f"{tname}: {lbl} {how}")
                continue
            self._join(node, target, merged[1:], params, deps)
            return
        why = "; ".join(f"not fused into {r}" for r in refusals) or "no fusable producer"
        if node.op in REDUCE:
            self._new_group(node, f"reduce {lbl} axes {reduce_axes(node)} starts this kernel "
                            f"({why})", shape=node.inputs[0].shape, axes=reduce_axes(node))
        else:
            self._new_group(node, f"{lbl} starts this kernel over {shape_str(node.shape)} ({why})")

    def _new_group(self, node: Node, note: str, shape: Shape | None = None, axes: tuple = (),
                   extern: bool = False) -> None:
        group = _Group(node.shape if shape is None else shape, axes, node, extern=extern)
        group.deps = self._deps(node, [group], group.shape) if not extern else \
            set().union(*(self._load_deps(i) for i in node.inputs))
        group.members.append(node)
        group.notes.append(note)
        self.group_of[node] = group
        self.groups.append(group)

    def _join(self, node: Node, target: _Group, others: list[_Group],
              params: tuple[Shape, tuple[int, ...]], deps: set[_Group]) -> None:
        lbl = self.label(node)
        was_elementwise = not target.axes
        for other in others:
            target.notes.append(f"merged the kernel started at {self.label(other.first)} "
                                f"({shape_str(other.shape)}) at {lbl}: no dependency between them")
            target.notes.extend(f"[{self.label(other.first)} kernel] {n}" for n in other.notes)
            target.members.extend(other.members)
            target.deps |= other.deps
            for m in other.members:
                self.group_of[m] = target
            self.groups.remove(other)
            for g in self.groups:
                if other in g.deps:
                    g.deps.discard(other)
                    g.deps.add(target)
        target.shape, target.axes = params
        target.deps |= deps
        target.deps -= {target, *others}
        target.members.append(node)
        self.group_of[node] = target
        if node.op in REDUCE:
            producer = self.label(node.inputs[0])
            start = "turns this kernel into a reduction" if was_elementwise else "joins"
            target.notes.append(f"reduce {lbl} axes {reduce_axes(node)} {start}: its operand "
                                f"{producer} is computed here")
        elif node.shape != target.shape:
            target.notes.append(f"fused {lbl} at the kept shape {shape_str(node.shape)} "
                                f"(after the reductions)")
        else:
            accs = [self.label(r.inputs[0]) for r, _ in self._refs(node)
                    if self._is_accumulator(r, [target], target.shape)]
            if accs:
                target.notes.append(f"epilogue: {lbl} on the full shape {shape_str(node.shape)} "
                                    f"reads the accumulator of {', '.join(accs)}")
            else:
                target.notes.append(f"fused {lbl} (same shape {shape_str(node.shape)})")

    # ------------------------------------------------------------------------- build
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
            self._materialise(src, consumer, f"the view chain breaks at {self.label(mv)}; read by")
        else:
            through = f"read through {', '.join(self.label(m) for m in _chain(ref)[1])} by" \
                if ref.op in MOVEMENT else "read by"
            self._materialise(src, consumer, f"{why}: {through}" if why else through)
        return Load(src, view)

    def _kernel_loads(self, item: _Item, group: _Group) -> None:
        members = set(group.members)
        for node in item.body:
            for ref, must_load in self._refs(node):
                if ref in item.loads or ref.op == "const" or ref in members:
                    continue
                if ref.op == "rand" and not must_load:
                    if ref.inputs[0] not in item.loads:
                        item.loads[ref.inputs[0]] = self._load(ref.inputs[0], item, "random key")
                elif must_load or not self._is_accumulator(ref, [group], group.shape):
                    item.loads[ref] = self._load(ref, item, "gather source" if must_load else "")

    def _extern_load(self, ref: Node, item: _Item) -> Load:
        view = compose(ref)[1]
        if view.masks is not None or (item.node.op == "matmul" and not _blas_friendly(view)):
            reason = "a padded view" if view.masks is not None else "a strided view BLAS cannot take"
            self._materialise(ref, item, f"{reason}, read by extern")
            return Load(ref, View.contiguous(ref.shape))
        return self._load(ref, item, "extern operand")

    def _build(self, outputs: list[Node]) -> Schedule:
        for group in self.groups:
            key = min(self.pos[m] for m in group.members)
            if group.extern:
                item = self._item("extern", key, group.shape, node=group.first)
            else:
                item = self._item("kernel", key, group.shape, axes=group.axes,
                                  body=sorted(group.members, key=self.pos.__getitem__))
            item.notes = list(group.notes)
            for m in group.members:
                self.producer[m] = item
            group.item = item
        for group in self.groups:
            if group.extern:
                group.item.extern_loads = [self._extern_load(i, group.item) for i in group.first.inputs]
            else:
                self._kernel_loads(group.item, group)
        held = [self._output(i, o) for i, o in enumerate(outputs)]
        for node in self.why:
            item = self.producer[node]
            if node not in item.outputs:
                item.outputs.append(node)
        for item in self.items:
            if item.kind == "kernel":
                item.outputs.sort(key=self.pos.__getitem__)
        ordered = self._order()
        names = {item: self._name(k, item) for k, item in enumerate(ordered)}
        self._note_materialised(names)
        sched_items: list[Kernel | Extern] = []
        for item in ordered:
            if item.kind == "extern":
                sched_items.append(Extern(names[item], item.node, tuple(item.extern_loads), item.notes))
            else:
                sched_items.append(Kernel(names[item], item.shape, item.axes, tuple(item.body),
                                          item.loads, tuple(item.outputs), item.notes))
        reads = {ld.src for it in self.items for ld in [*it.loads.values(), *it.extern_loads]}
        inputs = sorted((n for n in reads | set(held) if n.op == "buffer"), key=self.ids.__getitem__)
        return Schedule(sched_items, inputs, held, self.schedule_notes, dict(self.ids))

    def _output(self, index: int, node: Node) -> Node:
        """The node whose buffer holds graph output ``index`` (materialising it)."""
        if node.op == "buffer":
            return node
        if node.op in MOVEMENT:
            src, view, breaks = compose(node)
            if not breaks and view.is_contiguous and src.size == node.size:
                self.schedule_notes.append(f"output {index} ({self.label(node)}) is the buffer of "
                                           f"{self.label(src)} read as {node.type_str}: no copy")
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

    def _name(self, index: int, item: _Item) -> str:
        if item.kind == "extern":
            return f"k{index}_{item.node.op}_{shape_str(item.node.shape)}"
        if item.kind != "kernel":
            return f"k{index}_{item.kind}_{shape_str(item.shape)}"
        ops = [n.op for n in item.body if n.op in REDUCE]
        ops += [n.op for n in reversed(item.body) if n.op not in REDUCE]
        main = list(dict.fromkeys(ops))[:3]
        return f"k{index}_{'_'.join(main)}_{shape_str(item.shape)}"

    def _note_materialised(self, names: dict[_Item, str]) -> None:
        for node, reasons in self.why.items():
            item = self.producer[node]
            parts = [f"{why} {names[user]}" if user is not None else why for why, user in reasons]
            item.notes.append(f"materialised {self.label(node)} {node.type_str}: " + "; ".join(parts))
