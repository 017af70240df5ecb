"""Schedule: the fused program, the contract between fusion (ir/passes/fuse.py) and backends.

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
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    notes: list[str] = field(default_factory=list)

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
    notes: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    items: list[Kernel | Extern]
    inputs: list[Node]     # buffer leaves the program reads, in canonical order
    outputs: list[Node]    # graph outputs; each is written by an item (or is an input leaf)
    notes: list[str] = field(default_factory=list)  # fusion decisions not tied to one item

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
