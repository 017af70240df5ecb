"""The pass pipeline: which passes run, in what order, and a record of every stage."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..autodiff import expand_graph
from ..graph import Graph
from .constfold import constant_folding
from .cse import common_subexpression_elimination
from .dce import dead_code_elimination
from .simplify import algebraic_simplification

Pass = Callable[[Graph], Graph]

PASSES: list[tuple[str, Pass]] = [
    ("simplify", algebraic_simplification),
    ("constfold", constant_folding),
    ("cse", common_subexpression_elimination),
    ("dce", dead_code_elimination),
]

# Each of these can open up work for the other, so consecutive ones are repeated together.
REPEATED = frozenset({"simplify", "constfold"})
MAX_ROUNDS = 4


@dataclass
class PassRecord:
    """One run of one pass: its name, node counts, wall time and the graph it produced."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    graph: Graph


def _groups(passes: Sequence[tuple[str, Pass]]) -> list[list[tuple[str, Pass]]]:
    groups: list[list[tuple[str, Pass]]] = []
    for entry in passes:
        if groups and entry[0] in REPEATED and groups[-1][-1][0] in REPEATED:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def _run(name: str, fn: Pass, graph: Graph, records: list[PassRecord]) -> Graph:
    before = len(graph)
    start = time.perf_counter()
    out = fn(graph)
    seconds = time.perf_counter() - start
    records.append(PassRecord(name, before, len(out), seconds, out))
    return out


def optimize(graph: Graph, passes: Sequence[tuple[str, Pass]] = PASSES) -> tuple[Graph, list[PassRecord]]:
    """Run ``passes`` in order over ``graph``.

    Consecutive passes named in ``REPEATED`` (simplify, constfold) run as a group until the graph
    stops changing, at most ``MAX_ROUNDS`` times; the others run once.

    Args:
        graph: the graph to optimise (deferred gradients are expanded first); it is left
            unchanged.
        passes: ``(name, pass)`` pairs, by default ``PASSES``.

    Returns:
        The optimised graph and one ``PassRecord`` per pass run, in the order they ran.
    """
    graph = expand_graph(graph)
    records: list[PassRecord] = []
    for group in _groups(passes):
        rounds = MAX_ROUNDS if group[0][0] in REPEATED else 1
        for _ in range(rounds):
            before = graph.outputs
            for name, fn in group:
                graph = _run(name, fn, graph, records)
            # Nodes are hash-consed, so an unchanged graph has the very same output objects.
            if all(a is b for a, b in zip(before, graph.outputs)):
                break
    return graph, records
