"""The reference backend: runs the IR node by node with numpy.

Every other backend is tested against it, and it runs the project with nothing compiled.
"""
from __future__ import annotations

import numpy as np

from ..ir.autodiff import expand_gradients
from ..ir.dtypes import to_numpy
from ..ir.graph import Graph, toposort
from ..ir.node import Node
from ..ir.optable import STORE, TABLE


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
    outputs = expand_gradients(outputs)
    values: dict[Node, np.ndarray] = {}
    for node in toposort(outputs):
        values[node] = eval_node(node, [values[i] for i in node.inputs])
    return [np.array(values[n], order='C', copy=True) for n in outputs]


class InterpreterProgram:
    """A Graph ready to run on numpy; inputs are the graph's buffer leaves, in canonical order.

    Every node, ``assign`` included, is computed by its table reference. A store output (an
    ``assign``) then writes its value into the input array of its target (``np.copyto``) after
    every other output is computed, so each read of the target sees the value before it.
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
            else:
                values[node] = eval_node(node, [values[i] for i in node.inputs])
        # every value is copied before the first write: a value may read (or be) a target
        results = [np.array(values[n], order='C', copy=True).reshape(-1) for n in self.outputs]
        for k, node in enumerate(self.outputs):
            if node.op in STORE:
                target = bound[node.inputs[0]]
                np.copyto(target, results[k])
                results[k] = target
        return results
