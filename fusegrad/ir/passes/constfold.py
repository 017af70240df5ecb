"""Constant folding: ops whose operands are all ``const`` become one ``const``.

Values are computed with numpy on 0-d arrays of the node's dtypes, the way the interpreter computes
whole arrays, so float32 results round exactly as they would at run time. ``rand`` is never a
const and never folded.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .. import ops
from ..dtypes import is_float, to_numpy
from ..graph import Graph
from ..node import Node
from .rewrite import rewrite

_UFUNCS = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "recip": np.reciprocal,
    "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "abs": np.abs,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "lt": np.less, "le": np.less_equal, "eq": np.equal, "ne": np.not_equal,
}
_SHAPE_ONLY = frozenset({"reshape", "permute", "expand", "slice"})


def _scalar(node: Node) -> np.ndarray:
    return np.asarray(node.attrs[0], dtype=to_numpy(node.dtype))


def _const_like(node: Node, value: ArrayLike) -> Node:
    return ops.const(np.asarray(value).astype(to_numpy(node.dtype)).item(), node.shape, node.dtype,
                     node.loc)


def _elementwise_value(node: Node, inputs: tuple[Node, ...]) -> np.ndarray | None:
    if node.op == "div" and not is_float(node.dtype):
        return None  # the interpreter rejects it; folding would hide the error
    args = [_scalar(i) for i in inputs]
    with np.errstate(all="ignore"):
        if node.op in ("cast", "detach"):
            return args[0].astype(to_numpy(node.dtype))
        return np.asarray(_UFUNCS[node.op](*args))


def _fold(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    if not inputs or node.op == "rand":
        return None
    if node.op == "where":
        if inputs[0].op != "const":
            return None
        return inputs[1] if inputs[0].attrs[0] else inputs[2]
    if any(i.op != "const" for i in inputs):
        return None
    x = inputs[0]
    if node.op in _UFUNCS or node.op in ("cast", "detach"):
        try:
            value = _elementwise_value(node, inputs)
        except (ValueError, OverflowError):  # e.g. an integer to a negative power: a run-time error
            return None
        if value is None or (is_float(node.dtype) and value == 0 and np.signbit(value)):
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

    Folded: elementwise ops and casts whose operands are all const (in the node's dtype);
    reshape, permute, expand and slice of a const (a const of the new shape); pad of a const 0;
    sum (value times count), max and argmax (0) of a const; ``where`` with a const condition
    (the chosen branch). ``rand``, gather and extern ops are never folded.

    Args:
        graph: the graph to fold; it is left unchanged.
    """
    return rewrite(graph, _fold)
