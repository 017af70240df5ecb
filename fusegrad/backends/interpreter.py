"""The reference backend: runs the IR node by node with numpy.

Every other backend is tested against it, and it runs the project with nothing compiled.
"""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.graph import Graph, toposort
from ..ir.node import Node
from ..ir.ops import ASSIGN
from ..ir.random import uniform_numpy

_UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
    "recip": np.reciprocal, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "abs": np.abs,
}
_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "lt": np.less, "le": np.less_equal, "eq": np.equal, "ne": np.not_equal,
}


def _slices(ranges):
    return tuple(slice(a, b, c) for a, b, c in ranges)


def eval_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """Value of ``node`` (an array of ``node.shape``/``node.dtype``) from its inputs' values."""
    op, dt = node.op, to_numpy(node.dtype)
    if op == "buffer":
        return node.attrs[0].numpy()
    if op == "const":
        return np.full(node.shape, node.attrs[0], dtype=dt)
    if op == "rand":
        seed, offset = (int(v) for v in args[0])
        return uniform_numpy(seed, offset, node.shape, node.dtype)
    if op in _UNARY:
        with np.errstate(all="ignore"):
            return _UNARY[op](args[0]).astype(dt, copy=False)
    if op in ("cast", "detach"):
        return args[0].astype(dt, copy=False)
    if op in _BINARY:
        with np.errstate(all="ignore"):
            if op == "div" and not np.issubdtype(dt, np.floating):
                raise TypeError("integer div reaches the IR only through a cast to float")
            return np.asarray(_BINARY[op](args[0], args[1])).astype(dt, copy=False)
    if op == "where":
        return np.where(args[0], args[1], args[2]).astype(dt, copy=False)
    if op == "sum":
        # float32 adds in float64 and rounds once, as the numba_cpu kernels do (numpy's own
        # float32 sum is pairwise along the last axis only, naive along the others)
        wide = np.float64 if dt == np.float32 else dt
        return np.sum(args[0], axis=node.attrs[0], keepdims=True, dtype=wide).astype(dt, copy=False)
    if op == "max":
        return np.max(args[0], axis=node.attrs[0], keepdims=True)
    if op == "argmax":
        return np.expand_dims(np.argmax(args[0], axis=node.attrs[0]), node.attrs[0]).astype(dt)
    if op == "reshape":
        return args[0].reshape(node.shape)
    if op == "permute":
        return np.transpose(args[0], node.attrs[0])
    if op == "expand":
        return np.broadcast_to(args[0], node.shape)
    if op == "slice":
        return args[0][_slices(node.attrs[0])]
    if op == "pad":
        out = np.zeros(node.shape, dtype=dt)
        out[tuple(slice(s, s + n * st, st) if n else slice(0, 0)
                  for (s, st), n in zip(node.attrs[0], args[0].shape))] = args[0]
        return out
    if op == "gather":
        return np.take_along_axis(args[0], args[1].astype(np.int64), axis=node.attrs[0])
    if op == "scatter_add":
        axis = node.attrs[0]
        out = np.zeros(node.shape, dtype=dt)
        idx = list(np.indices(args[0].shape, sparse=True))
        idx[axis] = args[0].astype(np.int64)
        np.add.at(out, tuple(idx), args[1])
        return out
    if op == "matmul":
        return np.matmul(args[0], args[1])
    raise NotImplementedError(f"interpreter has no rule for op {op!r}")


def evaluate(outputs: list[Node] | tuple[Node, ...]) -> list[np.ndarray]:
    """Values of ``outputs``, computed node by node (fresh contiguous arrays)."""
    values: dict[Node, np.ndarray] = {}
    for node in toposort(outputs):
        values[node] = eval_node(node, [values[i] for i in node.inputs])
    return [np.array(values[n], order='C', copy=True) for n in outputs]


class InterpreterProgram:
    """A Graph ready to run on numpy; inputs are the graph's buffer leaves, in canonical order.

    An ``assign`` output writes its value into the input array of its target (``np.copyto``)
    after every other output is computed, so each read of the target sees the value before it.
    """

    def __init__(self, graph: Graph):
        self.order = toposort(graph.outputs)
        self.outputs = list(graph.outputs)
        self.inputs = [n for n in self.order if n.op == "buffer"]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values: dict[Node, np.ndarray] = {}
        bound = dict(zip(self.inputs, inputs))
        for node in self.order:
            if node.op == "buffer":
                values[node] = bound[node].reshape(node.shape)
            elif node.op != ASSIGN:
                values[node] = eval_node(node, [values[i] for i in node.inputs])
        results = [None if n.op == ASSIGN else np.array(values[n], order='C', copy=True).reshape(-1)
                   for n in self.outputs]
        writes = [(k, bound[n.inputs[0]], values[n.inputs[1]].reshape(-1))
                  for k, n in enumerate(self.outputs) if n.op == ASSIGN]
        # every value is computed (and copied) before the first write: a value may read a target
        staged = [(k, target, np.array(value, copy=True)) for k, target, value in writes]
        for k, target, value in staged:
            np.copyto(target, value)
            results[k] = target
        return results
