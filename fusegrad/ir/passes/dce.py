"""Dead-code elimination: keep only what the outputs need, without ``detach``."""
from __future__ import annotations

from ..graph import Graph
from ..node import Node
from .rewrite import rewrite


def _drop_detach(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    # detach only stops gradients; autodiff has already run when the passes do.
    return inputs[0] if node.op == "detach" else None


def dead_code_elimination(graph: Graph) -> Graph:
    """The graph restricted to the nodes its outputs depend on, with ``detach`` nodes removed.

    A Graph holds only what is reachable from its outputs, so rebuilding it from the outputs is
    what drops unused nodes; the node count never grows.

    Args:
        graph: the graph to clean; it is left unchanged.
    """
    return rewrite(graph, _drop_detach)
