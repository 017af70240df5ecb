"""Fusion, stage 1: normalise the graph for grouping, keeping every value.

Rules on the shared rewrite engine (``rewrite.py``), tried in order, the first that applies wins:
reductions over size-1 axes are identities (``argmax`` over one gives zeros) and drop their
size-1 axes; reshapes that only add or drop size-1 dims move after the elementwise ops and
reductions they feed; movement ops and gathers of constants are constants; a movement chain that
reads its base unchanged is its base; consecutive reshapes fold; ``expand`` of a small elementwise
expression is pushed below it (``expand(log(s))`` becomes ``log(expand(s))``), so that an epilogue
reads a reduction's accumulator instead of a materialised kept-shape value; a transposed
product ``(a @ b)^T`` used nowhere else is computed as ``b^T @ a^T``; a product over an inner
dim of 1 is an elementwise product of broadcast operands; and long sums of products or
of pads become one product or one ``concat`` (``fuse_sums.py``). Two of the rules are
simplify's own (``reduction_over_unit_axes``, ``fold_reshape_chain``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..fusion_decisions import DecisionKind, FusionDecision, NodeLabels
from ..graph import Graph, consumers
from ..node import Node
from ..ops import (ELEMENTWISE, MOVEMENT, REDUCE, binary, const, expand, matmul, permute,
                   reshape)
from ..view import View
from .fuse_sums import concat_rule, stacked_products_rule
from .fuse_views import Shape, compose, is_computed, is_unit_reshape, kept, reduce_axes
from .rewrite import Rule, rebuild, rewrite
from .simplify import fold_reshape_chain, reduction_over_unit_axes

# Largest elementwise expression recomputed per element under an ``expand`` (instead of being
# materialised at its smaller shape and read back).
PUSH_EXPAND_LIMIT = 8


@dataclass(frozen=True)
class NormaliseRule:
    """A named rewrite rule for nodes whose op is in ``ops``; ``reason`` says why the rewrite
    keeps the value (``{op}`` is the rewritten node's op)."""

    name: str
    reason: str
    ops: frozenset[str]
    apply: Rule


def _unit_axes(node: Node) -> tuple[int, ...]:
    return tuple(a for a in reduce_axes(node) if node.inputs[0].shape[a] != 1)


def drop_unit_axes(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """``sum``/``max`` over some size-1 axes reduces only the others."""
    if node.op not in ("sum", "max"):
        return None
    node = rebuild(node, inputs)
    axes = _unit_axes(node)
    if not axes or axes == node.attrs[0]:
        return None
    return Node(node.op, node.inputs, node.shape, node.dtype, (axes,), node.loc)


def pull_reshape_out_of_reduction(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """``reduce(reshape(x))`` as ``reshape(reduce(x))`` for a reshape of size-1 dims only, so
    that the reduction can join the kernel that computes ``x``."""
    if node.op not in REDUCE:
        return None
    r = inputs[0]
    if r.op != "reshape" or not is_unit_reshape(r) or not is_computed(r.inputs[0]):
        return None
    node = rebuild(node, inputs)
    x = r.inputs[0]
    outer = [d for d, n in enumerate(r.shape) if n != 1]
    inner = [d for d, n in enumerate(x.shape) if n != 1]
    mapped = tuple(sorted(dict(zip(outer, inner))[a] for a in _unit_axes(node)))
    attrs = (mapped,) if node.op != "argmax" else (mapped[0],)
    reduced = Node(node.op, (x,), kept(x.shape, mapped), node.dtype, attrs, node.loc)
    return reshape(reduced, node.shape, node.loc)


def pull_reshapes_out_of_elementwise(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """``f(reshape(a), reshape(b))`` as ``reshape(f(a, b))`` when every reshape only adds or
    drops size-1 dims, so that ``f`` can join the kernel that computes ``a``."""
    if node.op not in ELEMENTWISE:
        return None
    srcs = []
    for i in inputs:
        if i.op == "reshape" and is_unit_reshape(i):
            srcs.append(i.inputs[0])
        elif i.op != "const":
            return None
    if not srcs or len({s.shape for s in srcs}) != 1 or not any(map(is_computed, srcs)):
        return None
    shape = srcs[0].shape
    pulled = tuple(i.inputs[0] if i.op == "reshape" else const(i.attrs[0], shape, i.dtype, i.loc)
                   for i in inputs)
    return reshape(Node(node.op, pulled, shape, node.dtype, node.attrs, node.loc), node.shape,
                   node.loc)


def gather_of_const(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """Every element gathered from a constant is that constant."""
    if node.op == "gather" and inputs[0].op == "const":
        return const(inputs[0].attrs[0], node.shape, node.dtype, node.loc)
    return None


def movement_of_const(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """A movement op of a constant is a constant (a pad only when the constant is zero)."""
    if node.op not in MOVEMENT:
        return None
    x = inputs[0]
    if x.op == "const" and (node.op != "pad" or not x.attrs[0]):
        return const(x.attrs[0], node.shape, node.dtype, node.loc)
    return None


def view_of_base_unchanged(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """A movement chain whose composed view reads its base as it is, is its base."""
    if node.op not in MOVEMENT:
        return None
    src, view, breaks = compose(rebuild(node, inputs))
    if not breaks and src.shape == node.shape and view == View.contiguous(src.shape):
        return src
    return None


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


def push_expand_below_elementwise(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """``expand(f(s))`` (through a size-1 reshape or not) as ``f(expand(s))`` for a small
    elementwise expression ``f`` (at most ``PUSH_EXPAND_LIMIT`` ops)."""
    if node.op != "expand":
        return None
    x, mid = inputs[0], None
    if x.op == "reshape" and is_unit_reshape(x):
        x, mid = x.inputs[0], x.shape
    return _push_expand(x, mid, node.shape) if x.op in ELEMENTWISE else None


def outer_product(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """A product over an inner dim of 1, ``(.., M, 1) @ (.., 1, N)``, as the elementwise product
    of its operands broadcast to ``(.., M, N)``: each element is one product, as BLAS makes it
    (bit for bit), and it fuses with what reads it instead of being an extern call. The
    unrolled LSTMCell's input projection of its one feature, ``x_t @ W_ih^T``, and its head's
    gradient were 120 of its 661 calls per step (18 us each)."""
    if node.op != "matmul" or inputs[0].shape[-1] != 1:
        return None
    a, b = inputs
    return binary("mul", expand(a, node.shape, node.loc), expand(b, node.shape, node.loc),
                  node.loc)


def transposed_product(uses: Callable[[Node], int]) -> Rule:
    """The rule ``(a @ b)^T`` as ``b^T @ a^T`` when ``a @ b`` has no other use (``uses(m)`` is
    how many uses the graph gives the product ``m``)."""

    def rule(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        if node.op != "permute" or inputs[0].op != "matmul":
            return None
        x, nd = inputs[0], len(node.shape)
        if node.attrs[0] != (*range(nd - 2), nd - 1, nd - 2) or uses(x) != 1:
            return None
        a, b = x.inputs
        return matmul(permute(b, node.attrs[0]), permute(a, node.attrs[0]), x.loc)

    return rule


RULES: tuple[NormaliseRule, ...] = (
    NormaliseRule("reduce-unit-axes", "reduction over size-1 axes is an identity", REDUCE,
                  reduction_over_unit_axes),
    NormaliseRule("drop-unit-axes", "size-1 axes dropped from the reduction", REDUCE,
                  drop_unit_axes),
    NormaliseRule("pull-reshape-reduce", "the reshape of its operand moved after it", REDUCE,
                  pull_reshape_out_of_reduction),
    NormaliseRule("pull-reshape-elementwise", "the reshapes of its operands moved after it",
                  ELEMENTWISE, pull_reshapes_out_of_elementwise),
    NormaliseRule("gather-of-const", "gather of a constant", frozenset({"gather"}),
                  gather_of_const),
    NormaliseRule("movement-of-const", "{op} of a constant", MOVEMENT, movement_of_const),
    NormaliseRule("view-of-base", "the view reads its base unchanged", MOVEMENT,
                  view_of_base_unchanged),
    NormaliseRule("reshape-chain", "consecutive reshapes folded", frozenset({"reshape"}),
                  fold_reshape_chain),
    NormaliseRule("push-expand", "expand pushed below elementwise ops", frozenset({"expand"}),
                  push_expand_below_elementwise),
    NormaliseRule("outer-product", "a product over an inner dim of 1 is elementwise",
                  frozenset({"matmul"}), outer_product),
)
TRANSPOSED_PRODUCT = "transposed-product"
CONCAT = "concat"
STACKED_PRODUCTS = "stacked-products"


def normalise(graph: Graph, order: list[Node], labels: NodeLabels, concat: bool = True
              ) -> tuple[tuple[Node, ...], list[FusionDecision]]:
    """Rewrite ``graph`` with :data:`RULES`, the transposed product and the long-sum rules of
    ``fuse_sums.py`` for grouping.

    Args:
        graph: the graph to normalise; it is left unchanged.
        order: ``toposort(graph.outputs)``.
        labels: the numbering of ``graph``'s nodes; a node rebuilt over rewritten operands keeps
            its number, and every node a rule makes gets a new one.
        concat: the backend runs the ``concat`` extern; without it, long sums of pads stay as
            they are and stacked products join their operands with sums of pads.

    Returns:
        The normalised outputs, and one ``NORMALISED`` decision per rewrite, in the order they
        were made.
    """
    users = consumers(order)
    graph_uses = {n: len(u) for n, u in users.items()}
    for out in graph.outputs:
        graph_uses[out] += 1
    # adds whose only use is another add: inside a sum, not its root
    inner_adds = {n for n, u in users.items()
                  if n.op == "add" and graph_uses[n] == 1 and u and u[0].op == "add"}
    uses: dict[Node, int] = {}  # of the rebuilt nodes, counted on the nodes they copy
    inner: set[Node] = set()    # the rebuilt inner adds
    seen: set[Node] = set()

    def count(m: Node) -> int:
        return uses.get(m, 0)

    transposed = NormaliseRule(TRANSPOSED_PRODUCT, "transposed product computed directly "
                               "(b^T a^T)", frozenset({"permute"}), transposed_product(count))
    sums = [NormaliseRule(STACKED_PRODUCTS, "a sum of products computed as one product of the "
                          "joined operands", frozenset({"add"}),
                          stacked_products_rule(inner, count, concat))]
    if concat:
        sums.append(NormaliseRule(CONCAT, "a sum of pads tiling one axis copied piece by piece",
                                  frozenset({"add"}), concat_rule(inner)))
    rules_for: dict[str, list[NormaliseRule]] = {}
    for r in (*RULES, transposed, *sums):
        for op in r.ops:
            rules_for.setdefault(op, []).append(r)
    decisions: list[FusionDecision] = []

    def rule(node: Node, inputs: tuple[Node, ...]) -> Node | None:
        current = rebuild(node, inputs)
        if node in graph_uses and node not in seen:
            seen.add(node)
            labels.same_as(current, node)
            uses[current] = uses.get(current, 0) + graph_uses[node]
            if node in inner_adds:
                inner.add(current)
        for r in rules_for.get(current.op, ()):
            new = r.apply(current, current.inputs)
            if new is not None:
                message = f"normalised {labels(current)} -> {labels(new)}: " \
                    f"{r.reason.format(op=current.op)}"
                decisions.append(FusionDecision(DecisionKind.NORMALISED, message, (current, new),
                                                rule=r.name))
                if new is not current:
                    uses[new] = uses.get(new, 0) + uses.get(current, 0)
                return new
        return None

    return rewrite(graph, rule, order).outputs, decisions
