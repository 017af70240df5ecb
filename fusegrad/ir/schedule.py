"""Schedule: the fused program, the contract between fusion (ir/passes/fuse*.py) and backends.

A Schedule is a list of items run in order. Every node that crosses an item boundary is
*materialised*: it owns a contiguous buffer of ``node.size`` elements of ``node.dtype``.

Kernel (generated code):
  * iterates over ``shape`` (the full shape); ``reduce_axes`` are reduced (empty: elementwise).
  * ``body`` holds the compute nodes computed inside, in topological order: elementwise ops,
    reductions (``sum``/``max``/``argmax`` over exactly ``reduce_axes``) and ``gather``.
  * A body node has the full ``shape`` (computed per element) or, in a reduce kernel, the kept
    shape (``shape`` with reduced axes set to 1: computed once per outer index, after the
    reductions it needs). ``Kernel.level`` tells which.
  * A body node's input is one of: another body node; a key of ``loads`` (read from memory
    through a View, at the level of the node's shape); a ``const`` leaf (inlined); a ``rand``
    leaf (computed from its key, which is itself a load); or ``expand(r)`` where ``r`` is a
    reduction in the body expanded back to the full shape (the accumulator, broadcast).
  * In a reduce kernel, reductions run one after another over the reduced axes for each outer
    index; a later reduction and full-shape outputs (the epilogue) may use earlier accumulators.
  * ``outputs`` are written to their own buffers. An output may also be a load or a const
    (a copy kernel), e.g. when a graph output is a view of an input.
  * ``gather(x, idx)`` in the body: ``x`` must be a load (its view has ``x.shape``).

Extern: a library call (``matmul`` through BLAS, ``scatter_add``) on loaded inputs, writing
``node`` to its buffer.

``Schedule.outputs[i]`` is the node whose buffer holds graph output ``i``: the output itself, or,
when the output is a reshape that reads its base's buffer unchanged, that base (same elements in
the same order; its shape may differ, its size and dtype do not).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .fusion_decisions import FusionDecision
from .node import Node
from .view import View


@dataclass(frozen=True)
class Load:
    """A node read from memory: ``src`` is the materialised node, ``view`` maps the loaded node's
    index space (``view.shape``) to offsets in ``src``'s flat buffer."""

    src: Node
    view: View


@dataclass
class Kernel:
    name: str
    shape: tuple[int, ...]
    reduce_axes: tuple[int, ...]
    body: tuple[Node, ...]
    loads: dict[Node, Load]
    outputs: tuple[Node, ...]
    decisions: list[FusionDecision] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """The fusion decisions that made this kernel, in words."""
        return [str(d) for d in self.decisions]

    @property
    def kept_shape(self) -> tuple[int, ...]:
        return tuple(1 if i in self.reduce_axes else d for i, d in enumerate(self.shape))

    def level(self, node: Node) -> str:
        """'full' for nodes computed per element of ``shape``; 'kept' for per-outer-index ones."""
        if not self.reduce_axes or node.shape == self.shape:
            return "full"
        return "kept"


@dataclass
class Extern:
    name: str
    node: Node
    loads: tuple[Load, ...]
    decisions: list[FusionDecision] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """The fusion decisions about this call, in words."""
        return [str(d) for d in self.decisions]


@dataclass
class Schedule:
    items: list[Kernel | Extern]
    inputs: list[Node]     # buffer leaves the program reads, in canonical order
    outputs: list[Node]    # graph outputs; each is written by an item (or is an input leaf)
    decisions: list[FusionDecision] = field(default_factory=list)  # not tied to one item
    node_ids: dict[Node, int] = field(default_factory=dict)  # %numbers for printing

    @property
    def notes(self) -> list[str]:
        """The fusion decisions not tied to one item, in words."""
        return [str(d) for d in self.decisions]

    @property
    def kernels(self) -> list[Kernel]:
        return [it for it in self.items if isinstance(it, Kernel)]

    @property
    def externs(self) -> list[Extern]:
        return [it for it in self.items if isinstance(it, Extern)]

    def materialised(self) -> list[Node]:
        out: list[Node] = []
        for it in self.items:
            out.extend(it.outputs if isinstance(it, Kernel) else (it.node,))
        return out


# ----------------------------------------------------------------------------- printing
def _fmt_shape(shape: tuple[int, ...]) -> str:
    return f"[{','.join(map(str, shape))}]"


def format_view(view: View) -> str:
    """``[32,10] contiguous`` or ``[10,32] strides (1,10) offset 3 masks (...)``."""
    if view.is_contiguous:
        return f"{_fmt_shape(view.shape)} contiguous"
    text = f"{_fmt_shape(view.shape)} strides ({','.join(map(str, view.strides))})"
    if view.offset:
        text += f" offset {view.offset}"
    if view.masks is not None:
        text += " masks (" + ", ".join("-" if m is None else ":".join(map(str, m)) for m in view.masks) + ")"
    return text


class _Namer:
    def __init__(self, ids: dict[Node, int]):
        self.ids = dict(ids)
        self.next = max(self.ids.values(), default=-1) + 1

    def __call__(self, node: Node) -> str:
        if node not in self.ids:
            self.ids[node] = self.next
            self.next += 1
        return f"%{self.ids[node]}"


def _operand(node: Node, ref: Node, kernel: Kernel, name: _Namer, body: set[Node]) -> str:
    if ref.op == "const":
        return repr(ref.attrs[0])
    if ref.op == "rand" and ref not in kernel.loads:
        return f"rand({name(ref.inputs[0])})"
    if ref.op == "expand" and ref not in kernel.loads and ref.inputs[0] in body:
        return f"expand({name(ref.inputs[0])})"
    return name(ref)


def _body_line(node: Node, kernel: Kernel, name: _Namer, body: set[Node]) -> str:
    attrs = ""
    if node.op in ("sum", "max", "argmax", "gather"):
        attrs = f"[{node.attrs[0]}]"
    args = ", ".join(_operand(node, i, kernel, name, body) for i in node.inputs)
    line = f"{name(node)} : {node.type_str} = {node.op}{attrs}({args})"
    tail = [node.loc] if node.loc else []
    if kernel.level(node) == "kept":
        tail.append("kept")
    if node in kernel.outputs:
        tail.append("-> out")
    return line + (f"   # {'  '.join(tail)}" if tail else "")


def format_schedule(schedule: Schedule) -> str:
    """A readable dump of a schedule, one block per item, for debugging fusion.

    Each block gives the item's name and kind, its iteration shape and reduced axes, the nodes it
    writes, what it loads (source node and view), its body one node per line
    (``%7 : f32[32,10] = exp(%6)   # model.py:12``) and the fusion decisions that explain it,
    each followed by its kind and rules in brackets (``[started; refused by cycle]``).

    Args:
        schedule: the schedule to print (node numbers come from ``schedule.node_ids``).
    """
    return "\n".join(_schedule_lines(schedule, _Namer(schedule.node_ids)))


def schedule_node_ids(schedule: Schedule) -> dict[Node, int]:
    """The ``%`` number of every node ``format_schedule`` prints: ``schedule.node_ids``, and the
    nodes made by fusion's normalisation numbered after them, as the printer numbers them."""
    name = _Namer(schedule.node_ids)
    _schedule_lines(schedule, name)
    return name.ids


def _schedule_lines(schedule: Schedule, name: _Namer) -> list[str]:
    lines = [f"# schedule: {len(schedule.kernels)} kernels, {len(schedule.externs)} externs"]
    lines.append("inputs: " + (", ".join(f"{name(n)} {n.type_str}" for n in schedule.inputs) or "-"))
    lines.append("outputs: " + (", ".join(f"{name(n)} {n.type_str}" for n in schedule.outputs) or "-"))
    lines.extend(f"# {d}   [{d.tag}]" for d in schedule.decisions)
    for item in schedule.items:
        lines.append("")
        if isinstance(item, Extern):
            args = ", ".join(name(ld.src) for ld in item.loads)
            loc = f"   # {item.node.loc}" if item.node.loc else ""
            lines.append(f"{item.name}  extern {item.node.op}({args}) -> {name(item.node)} "
                         f"{item.node.type_str}{loc}")
            lines.extend(f"  load {name(ld.src)} {ld.src.type_str} as {format_view(ld.view)}"
                         for ld in item.loads)
        else:
            reduce = f" reducing axes {item.reduce_axes}" if item.reduce_axes else " elementwise"
            lines.append(f"{item.name}  kernel over {_fmt_shape(item.shape)}{reduce}")
            lines.append("  writes: " + ", ".join(f"{name(n)} {n.type_str}" for n in item.outputs))
            for ref, ld in item.loads.items():
                lines.append(f"  load {name(ref)} {ref.type_str} <- {name(ld.src)} "
                             f"{ld.src.type_str} as {format_view(ld.view)}")
            body = set(item.body)
            lines.extend(f"    {_body_line(n, item, name, body)}" for n in item.body)
        lines.extend(f"  - {d}   [{d.tag}]" for d in item.decisions)
    return lines
