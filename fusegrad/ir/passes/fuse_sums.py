"""Fusion, stage 1 (continued): long sums that are better computed another way.

Two normalisation rules (``fuse_normalise.py``) on the root of a tree of ``add`` nodes, whose
inner adds have no other use:

* **concat** -- a sum of at least ``CONCAT_MIN_PARTS`` pads that tile one axis (the front end's
  ``cat``/``stack``, and the gradient of slicing every time step of a sequence) becomes one
  ``concat`` extern: a copy per piece. Fused, each element of the sum tests every piece: a
  compiled cat of 35 (32, 1024) pieces took 4.4 ms fused and 0.65 ms as a concat; of 8 pieces,
  0.26 and 0.11 ms.
* **stacked-products** -- a sum of at least ``STACK_MIN_PRODUCTS`` matrix products of one shape
  (a recurrent weight's gradient, one product per time step) becomes one product of the
  concatenated operands, ``sum_i a_i @ b_i = [a_1 .. a_n] @ [b_1; ..; b_n]``, when copying the
  operands moves no more elements than adding the products would. In the zoo's 2-layer LSTM,
  68 products of depth 32 (0.34 ms each) and their sums (4.5 ms) became two products of depth
  1,088 (about 5 ms each) and the concats of their operands (about 1 ms each).

Both keep the value; only the order in which a float sum adds its terms changes.
"""
from __future__ import annotations

from collections.abc import Callable

from ..node import Node
from ..ops import binary, concat, matmul, pads_sum, permute
from .rewrite import Rule

# Fewest pieces a sum of pads needs to become a concat. A short cat stays a kernel, which also
# computes what reads it elementwise (an LSTM cell's four gate gradients): testing a few pieces
# per element costs less than a second pass over the result.
CONCAT_MIN_PARTS = 8

# Fewest products of one shape a sum needs to become one stacked product.
STACK_MIN_PRODUCTS = 8


def sum_terms(root: Node, inner: set[Node]) -> list[Node]:
    """The terms of the add tree under ``root``: its inputs, and recursively those of inputs
    that are adds in ``inner`` (adds whose only use is this tree), left to right."""
    terms: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node is root or (node.op == "add" and node in inner):
            stack.extend(reversed(node.inputs))
        else:
            terms.append(node)
    return terms


def tiling(terms: list[Node]) -> tuple[int, list[Node]] | None:
    """``(axis, pieces in order)`` when ``terms`` are pads whose pieces tile one axis of the
    result exactly (each covering the whole of every other axis); None otherwise."""
    if not terms or any(t.op != "pad" for t in terms):
        return None
    shape = terms[0].shape
    axes = {d for t in terms for d, n in enumerate(t.inputs[0].shape) if n != shape[d]}
    if len(axes) > 1:
        return None
    axis = axes.pop() if axes else 0
    placed = []
    for t in terms:
        for d, (start, step) in enumerate(t.attrs[0]):
            if d != axis and start != 0:
                return None
            if d == axis and step != 1 and t.inputs[0].shape[d] > 1:
                return None
        placed.append((t.attrs[0][axis][0], t.inputs[0]))
    placed.sort(key=lambda p: p[0])
    end = 0
    for start, piece in placed:
        if start != end:
            return None
        end += piece.shape[axis]
    if end != shape[axis]:
        return None
    return axis, [piece for _, piece in placed]


def joined(parts: list[Node], axis: int, extern: bool) -> Node:
    """``parts`` concatenated along ``axis``: a ``concat`` when ``extern``, else a sum of pads
    (what the front end writes). Transposed matrices are joined untransposed, then transposed:
    the copy then reads and writes whole rows."""
    if all(p.op == "permute" and p.attrs[0] == (1, 0) for p in parts):
        return permute(joined([p.inputs[0] for p in parts], 1 - axis, extern), (1, 0))
    return concat(tuple(parts), axis) if extern else pads_sum(parts, axis)


def concat_rule(inner: set[Node]) -> Rule:
    """The rule: a sum of ``CONCAT_MIN_PARTS`` or more pads tiling one axis is a ``concat``."""

    def rule(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "add" or node in inner:
            return None
        terms = sum_terms(node, inner)
        if len(terms) < CONCAT_MIN_PARTS:
            return None
        found = tiling(terms)
        if found is None:
            return None
        axis, pieces = found
        return concat(tuple(pieces), axis, node.loc)

    return rule


def stacked_products_rule(inner: set[Node], uses: Callable[[Node], int], extern: bool) -> Rule:
    """The rule: a sum with ``STACK_MIN_PRODUCTS`` or more 2-D products (used nowhere else) is
    one product of their joined operands, plus the other terms. ``extern``: join with ``concat``
    (else with sums of pads)."""

    def rule(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "add" or node in inner or len(node.shape) != 2:
            return None
        terms = sum_terms(node, inner)
        products = [t for t in terms if t.op == "matmul" and uses(t) == 1]
        if len(products) < STACK_MIN_PRODUCTS:
            return None
        m, n = node.shape
        depth = sum(p.inputs[0].shape[1] for p in products)
        if (m + n) * depth > len(products) * m * n:
            return None
        a = joined([p.inputs[0] for p in products], 1, extern)
        b = joined([p.inputs[1] for p in products], 0, extern)
        acc = matmul(a, b, node.loc)
        for t in terms:
            if t not in products:
                acc = binary("add", acc, t, node.loc)
        return acc

    return rule
