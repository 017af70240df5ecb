"""The reference backend: runs the IR node by node with numpy.

Every other backend is tested against it, and it runs the project with nothing compiled.
"""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import to_numpy
from ..ir.graph import Graph, toposort
from ..ir.node import Node
from ..ir.ops import ASSIGN
from ..ir.optable import TABLE


def eval_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """Value of ``node`` (an array of ``node.shape``/``node.dtype``) from its inputs' values,
    computed by the op table's reference implementation."""
    spec = TABLE.get(node.op)
    if spec is None:
        raise NotImplementedError(f"interpreter has no rule for op {node.op!r}")
    with np.errstate(all="ignore"):
        return np.asarray(spec.reference(node, args)).astype(to_numpy(node.dtype), copy=False)


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
