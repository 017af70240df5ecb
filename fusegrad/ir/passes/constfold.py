"""Constant folding: ops whose operands are all ``const`` become one ``const``.

Elementwise values come from the op table's reference implementations (``ir/optable``), run on
0-d arrays of the node's dtypes, the way the interpreter runs them on whole arrays, so float32
results round exactly as they would at run time and a new elementwise op folds with no entry
here. ``rand`` is never a const and never folded.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .. import ops
from ..dtypes import is_float, to_numpy
from ..graph import Graph
from ..node import Node
from ..optable import TABLE, Category
from .rewrite import rewrite

_SHAPE_ONLY = frozenset({"reshape", "permute", "expand", "slice"})


def _scalar(node: Node) -> np.ndarray:
    return np.asarray(node.attrs[0], dtype=to_numpy(node.dtype))


def _const_like(node: Node, value: ArrayLike) -> Node:
    return ops.const(np.asarray(value).astype(to_numpy(node.dtype)).item(), node.shape, node.dtype,
                     node.loc)


def _elementwise_value(node: Node, inputs: tuple[Node, ...]) -> np.ndarray:
    """The op's reference implementation on 0-d operands, rounded to the node's dtype."""
    with np.errstate(all="ignore"):
        value = TABLE[node.op].reference(node, [_scalar(i) for i in inputs])
        return np.asarray(value).astype(to_numpy(node.dtype))


def _fold(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    spec = TABLE[node.op]
    if not inputs or spec.category is Category.LEAF:
        return None
    if node.op == "where":
        if inputs[0].op != "const":
            return None
        return inputs[1] if inputs[0].attrs[0] else inputs[2]
    if any(i.op != "const" for i in inputs):
        return None
    x = inputs[0]
    if spec.category is Category.ELEMENTWISE:
        try:
            value = _elementwise_value(node, inputs)
        except (TypeError, ValueError, OverflowError):
            # a run-time error (integer div, an integer to a negative power): folding would hide it
            return None
        if is_float(node.dtype) and value == 0 and np.signbit(value):
            # const nodes are interned by value and -0.0 == 0.0, so a folded -0.0 could come back
            # as an existing +0.0 const and flip the sign of a later division's infinity.
            return None
        return _const_like(node, value)
    if node.op in _SHAPE_ONLY or node.op == "max":
        return _const_like(node, _scalar(x))
    if node.op == "pad":
        return _const_like(node, 0) if x.attrs[0] == 0 or x.size == 0 else None
    if node.op == "sum":
        count = math.prod(x.shape[a] for a in node.attrs[0])
        if count == 0:  # an empty sum is 0, even of inf or nan
            return _const_like(node, 0)
        with np.errstate(all="ignore"):
            return _const_like(node, np.multiply(_scalar(x), np.asarray(count, dtype=to_numpy(x.dtype))))
    if node.op == "argmax":
        return _const_like(node, 0)
    return None


def constant_folding(graph: Graph) -> Graph:
    """Fold ops over ``const`` operands into ``const`` nodes.

    Folded: every elementwise op of the op table whose operands are all const, computed by the
    table's reference implementation in the node's dtype; reshape, permute, expand and slice of
    a const (a const of the new shape); pad of a const 0; sum (value times count), max and
    argmax (0) of a const; ``where`` with a const condition (the chosen branch). Leaves, gather
    and extern ops are never folded.

    Args:
        graph: the graph to fold; it is left unchanged.
    """
    return rewrite(graph, _fold)
