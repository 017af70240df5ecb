"""From a traced Graph to something that runs: passes, fusion and code generation per backend."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..ir.autodiff import expand_graph
from ..ir.graph import Graph
from ..ir.node import Node
from ..ir.ops import ASSIGN

BACKENDS = ("numba_cpu", "interpreter")
# Programs whose buffers live on a CUDA device compile for this backend, whatever BACKENDS'
# choice is for host memory (tracer/realize.py picks it from the leaves' devices).
CUDA_BACKEND = "numba_cuda"


class Runnable(Protocol):
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class CompileReport:
    """What compiling one graph did: the stages' outputs and how long each took.

    A program loaded from the disk program cache (``from_disk``) ran no stage in this process:
    ``passes`` is empty, ``schedule`` None, ``seconds`` holds the load time, and the counts and
    stage times of the compilation that wrote the entry are ``stored_counts`` and
    ``original_seconds``. ``full_report`` recompiles it for every stage.

    ``traced`` is the graph compiled, deferred gradients expanded (a loaded program's is its
    ``keyed`` graph); ``keyed`` the graph as ``realize`` keyed it, whose buffer leaves, in key
    order, are the ones it binds.
    """

    backend: str
    traced: Graph
    keyed: Graph                 # the graph as realize keyed it (deferred gradients unexpanded)
    passes: list[Any] = field(default_factory=list)   # ir.passes.PassRecord per pass
    schedule: Any = None                              # ir.schedule.Schedule (compiled backends)
    seconds: dict[str, float] = field(default_factory=dict)
    program: Any = None
    from_disk: bool = False
    stored_counts: tuple[int, int] | None = None      # (kernels, externs) of a loaded program
    original_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kernel_count(self) -> int:
        if self.schedule is not None:
            return len(self.schedule.kernels)
        return self.stored_counts[0] if self.stored_counts is not None else 0

    @property
    def extern_count(self) -> int:
        if self.schedule is not None:
            return len(self.schedule.externs)
        return self.stored_counts[1] if self.stored_counts is not None else 0


@dataclass
class Compiled:
    program: Runnable
    inputs: list[Node]        # the buffer leaves the program reads, in ``run``'s order
    report: CompileReport


def default_backend() -> str:
    name = os.environ.get("FUSEGRAD_BACKEND", "numba_cpu")
    if name not in BACKENDS:
        raise ValueError(f"FUSEGRAD_BACKEND={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def compile_graph(graph: Graph, backend: str) -> Compiled:
    """Optimize, fuse and compile ``graph`` for ``backend``.

    Deferred gradients (``ops.grad``) are expanded first: the report's ``traced`` graph is the
    expanded one, and ``keyed`` the graph as given (whose buffer leaves, in key order, are the
    ones ``realize`` binds).
    """
    keyed, graph = graph, expand_graph(graph)
    report = CompileReport(backend, graph, keyed)
    if backend == "interpreter":
        from .interpreter import InterpreterProgram
        prog = InterpreterProgram(graph)
        report.program = prog
        return Compiled(prog, prog.inputs, report)
    from ..ir.passes import optimize
    from ..ir.passes.fuse import fuse
    if backend == "numba_cuda":
        from .numba_cuda import compile_schedule
    else:
        from .numba_cpu import compile_schedule

    t0 = time.perf_counter()
    values, targets = split_assigns(graph)
    optimized, records = optimize(values)
    t1 = time.perf_counter()
    schedule = fuse(optimized, concat=backend != CUDA_BACKEND)
    t2 = time.perf_counter()
    program = compile_schedule(schedule, targets)
    t3 = time.perf_counter()
    report.passes, report.schedule, report.program = records, schedule, program
    report.seconds = {"passes": t1 - t0, "fusion": t2 - t1, "codegen+compile": t3 - t2}
    return Compiled(program, list(program.inputs), report)


def split_assigns(graph: Graph) -> tuple[Graph, dict[int, Node]]:
    """``graph`` with each ``assign`` output replaced by its value, and the target leaf of each
    such output by position: the passes and fusion compute values; the program writes them."""
    targets = {k: node.inputs[0] for k, node in enumerate(graph.outputs) if node.op == ASSIGN}
    if not targets:
        return graph, targets
    values = tuple(node.inputs[1] if k in targets else node for k, node in enumerate(graph.outputs))
    return Graph(values), targets


# ---------------------------------------------------------------------------- disk program cache
_BYPASS: list[int] = [0]


@contextlib.contextmanager
def bypass_program_cache() -> Iterator[None]:
    """Within this block, programs are compiled through every stage, never loaded from the disk
    program cache (they are still written to it)."""
    _BYPASS[0] += 1
    try:
        yield
    finally:
        _BYPASS[0] -= 1


def load_cached(backend: str, key: tuple, graph: Graph, inputs: list[Node]
                ) -> tuple[Compiled, list[int]] | None:
    """The program of structural ``key`` from the disk program cache, or None (a miss).

    Args:
        backend: the backend name (only numba_cpu keeps programs on disk).
        key: the graph's structural key (``ir.key.structural_key``).
        graph: the graph over data-less stand-ins of its buffer leaves (the report's ``traced``).
        inputs: those stand-ins, in the key's leaf order.

    Returns:
        The compiled program and, for each of its inputs, its position in ``inputs``.
    """
    if backend != "numba_cpu" or _BYPASS[0]:
        return None
    from .numba_cpu import program_cache
    if not program_cache.enabled():
        return None
    t0 = time.perf_counter()
    digest = program_cache.entry_key(backend, key)
    found = program_cache.load(digest, len(inputs)) if digest is not None else None
    if found is None:
        return None
    program, slots = found
    facts = program.facts
    report = CompileReport(backend, graph, graph, program=program, from_disk=True,
                           stored_counts=(facts["kernel_count"], facts["extern_count"]),
                           original_seconds=dict(facts["seconds"]))
    report.seconds = {"load (disk cache)": time.perf_counter() - t0}
    return Compiled(program, [inputs[s] for s in slots], report), slots


def store_cached(backend: str, key: tuple, compiled: Compiled, slots: list[int]) -> None:
    """Save a program just compiled to the disk program cache (numba_cpu; never fails)."""
    if backend != "numba_cpu" or compiled.report.schedule is None:
        return
    from .numba_cpu import program_cache
    if not program_cache.enabled():
        return
    digest = program_cache.entry_key(backend, key)
    if digest is not None:
        program_cache.store(digest, compiled.program, slots, compiled.report.seconds)


def from_disk(compiled: Compiled) -> bool:
    """Whether the program, or any of its kernels, was loaded from the disk cache."""
    if compiled.report.backend != "numba_cpu":
        return False
    from .numba_cpu import cache
    return compiled.report.from_disk or any(cache.was_loaded(ks)
                                            for ks in compiled.program.sources)


def recompile(key: tuple, compiled: Compiled) -> Compiled:
    """``compiled``'s graph compiled again, after a program loaded from disk failed its first run:
    its disk entries (the program's and its kernels') are deleted and every kernel is compiled,
    none loaded."""
    from .numba_cpu import cache, program_cache
    backend = compiled.report.backend
    digest = program_cache.entry_key(backend, key)
    if digest is not None:
        program_cache.discard(digest)
    for ks in compiled.program.sources:
        cache.forget(ks)
    with cache.fresh_kernels():
        return compile_graph(compiled.report.keyed, backend)


def full_report(report: CompileReport) -> CompileReport:
    """``report`` with every stage: a program loaded from disk is compiled again from its traced
    graph (its kernels come from memory or the kernel cache)."""
    if not report.from_disk:
        return report
    return compile_graph(report.keyed, report.backend).report
