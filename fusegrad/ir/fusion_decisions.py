"""Fusion decisions as records: what fusion did with each node and kernel, and why.

Every kernel fusion makes explains itself: which nodes joined it and by which rule, which kernels
a node could not join (a :class:`Refusal` naming the rule that refused), what was rewritten before
grouping and what was materialised for whom. Each of these is a :class:`FusionDecision`. The
Schedule holds them (``Kernel.decisions``, ``Extern.decisions``, ``Schedule.decisions``); the text
schedule and the generated source print their messages, the JSON dump exports them as data, and
tests check them by kind and rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .node import Node


class DecisionKind(Enum):
    """What a decision did."""

    NORMALISED = "normalised"      # a value-preserving rewrite before grouping (``rule`` names it)
    EXTERN = "extern"              # an extern call, a fusion boundary, has its own item
    STARTED = "started"            # a node starts a kernel (``refusals``: why it joined none)
    FUSED = "fused"                # an elementwise node joins at the kernel's shape
    FUSED_KEPT = "fused-kept"      # an elementwise node joins at the kept shape, after the reductions
    EPILOGUE = "epilogue"          # an elementwise node on the full shape reads an accumulator
    REDUCTION = "reduction"        # a reduction joins the kernel that computes its operand
    MERGED = "merged"              # the kernel of another operand merged in at a node reading both
    MATERIALISED = "materialised"  # a node given its own buffer (``readers``: who reads it)
    RECOMPUTED = "recomputed"      # a cheap node computed again by a kernel that reads it, not loaded
    OUTPUT_VIEW = "output-view"    # a graph output is its base's buffer read unchanged: no copy


class RefusalRule(Enum):
    """The grouping rule that kept a node out of a kernel."""

    ITERATION_SPACE = "iteration-space"  # the kernel iterates another shape or reduces other axes
    KERNEL_SIZE = "kernel-size"          # the kernel already holds the most nodes a kernel may
    KERNEL_INPUTS = "kernel-inputs"      # the kernel would read more values than a kernel may
    READS_ITS_RESULT = "reads-its-result"  # the node reads the kernel's result from memory
    CYCLE = "cycle"                      # the node reads a kernel that depends on this kernel


@dataclass(frozen=True, eq=False)
class Refusal:
    """A node not fused into a kernel.

    Attributes:
        rule: the rule that refused.
        node: the node that was not fused.
        kernel: the first node of the kernel it was not fused into.
        message: the reason in words, e.g. ``the kernel started at %3 exp iterates 5x5``.
        blocker: for ``CYCLE``, the first node of the kernel that depends on ``kernel``.
    """

    rule: RefusalRule
    node: Node
    kernel: Node
    message: str
    blocker: Node | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, eq=False)
class FusionDecision:
    """One decision of fusion, on the item (or the Schedule) it concerns.

    Attributes:
        kind: what was decided.
        message: the decision in words, as the dumps print it.
        nodes: the nodes it concerns, the deciding node first (``NORMALISED``: before, after;
            ``MERGED``: the node, then the first node of the kernel merged in).
        rule: for ``NORMALISED``, the name of the rewrite rule that fired.
        refusals: why the node did not join the kernels it reads (``STARTED``: any of them;
            a node that joined one: those tried before it).
        readers: for ``MATERIALISED``, the names of the items that read the buffer ("" for a
            graph output), one per reason in the message.
        via: the labels of the first nodes of the kernels this decision came from by merging,
            outermost first (a merged kernel keeps its decisions, prefixed ``[%3 exp kernel]``).
    """

    kind: DecisionKind
    message: str
    nodes: tuple[Node, ...] = ()
    rule: str | None = None
    refusals: tuple[Refusal, ...] = ()
    readers: tuple[str, ...] = ()
    via: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "".join(f"[{label} kernel] " for label in self.via) + self.message

    @property
    def tag(self) -> str:
        """The kind and rules in short, e.g. ``normalised: push-expand`` or
        ``started; refused by iteration-space, cycle``."""
        text = self.kind.value + (f": {self.rule}" if self.rule else "")
        if self.refusals:
            text += "; refused by " + ", ".join(dict.fromkeys(r.rule.value for r in self.refusals))
        return text


class NodeLabels:
    """``%7 exp`` labels for decisions, numbered as ``format_graph`` numbers the fused graph;
    nodes that fusion makes are numbered after the others, in the order they are first named."""

    def __init__(self, order: list[Node]):
        self.ids: dict[Node, int] = {n: i for i, n in enumerate(order)}
        self._next = len(order)

    def number(self, node: Node) -> int:
        """The ``%`` number of ``node`` (a new one for a node not yet numbered)."""
        if node not in self.ids:
            self.ids[node] = self._next
            self._next += 1
        return self.ids[node]

    def same_as(self, copy: Node, node: Node) -> None:
        """Give ``copy`` (``node`` rebuilt over rewritten operands) ``node``'s number, unless it
        has one already, so that dumps line up with ``format_graph``."""
        self.ids.setdefault(copy, self.ids[node])

    def __call__(self, node: Node) -> str:
        return f"%{self.number(node)} {node.op}"
