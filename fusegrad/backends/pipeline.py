"""From a traced Graph to something that runs: passes, fusion and code generation per backend."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node

BACKENDS = ("numba_cpu", "interpreter")


class Runnable(Protocol):
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class CompileReport:
    """What compiling one graph did: the stages' outputs and how long each took."""

    backend: str
    traced: Graph
    passes: list[Any] = field(default_factory=list)   # ir.passes.PassRecord per pass
    schedule: Any = None                              # ir.schedule.Schedule (compiled backends)
    seconds: dict[str, float] = field(default_factory=dict)
    program: Any = None

    @property
    def kernel_count(self) -> int:
        return len(self.schedule.kernels) if self.schedule is not None else 0

    @property
    def extern_count(self) -> int:
        return len(self.schedule.externs) if self.schedule is not None else 0


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
    """Optimize, fuse and compile ``graph`` for ``backend``."""
    report = CompileReport(backend, graph)
    if backend == "interpreter":
        from .interpreter import InterpreterProgram
        prog = InterpreterProgram(graph)
        report.program = prog
        return Compiled(prog, prog.inputs, report)
    from ..ir.passes import optimize
    from ..ir.passes.fuse import fuse
    from .numba_cpu import compile_schedule

    t0 = time.perf_counter()
    optimized, records = optimize(graph)
    t1 = time.perf_counter()
    schedule = fuse(optimized)
    t2 = time.perf_counter()
    program = compile_schedule(schedule)
    t3 = time.perf_counter()
    report.passes, report.schedule, report.program = records, schedule, program
    report.seconds = {"passes": t1 - t0, "fusion": t2 - t1, "codegen+compile": t3 - t2}
    return Compiled(program, list(schedule.inputs), report)
