"""Realization: compile and run everything pending as one program, cached by graph structure."""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

from ..backends.pipeline import Compiled, compile_graph, default_backend
from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.errors import CaptureError, with_location
from ..ir.graph import Graph
from ..ir.key import structural_key
from ..ir.node import Node
from .provenance import user_location
from .tensor import PENDING, Tensor


@dataclass
class Entry:
    compiled: Compiled
    slots: list[int]          # for each program input, its position among the graph's leaves
    runs: int = 0


@dataclass
class Stats:
    realizations: int = 0
    programs_compiled: int = 0
    program_cache_hits: int = 0
    compile_seconds: float = 0.0
    last_report: object = None   # report of the last program compiled
    last_entry: object = None    # the last program run
    history: list = field(default_factory=list)

    def reset(self) -> None:
        self.__init__()


STATS = Stats()
_PROGRAMS: dict[tuple, Entry] = {}
_backend: list[str | None] = [None]
_capture: list[object] = []


def set_backend(name: str | None) -> None:
    """Choose the backend for later realizations (None: ``FUSEGRAD_BACKEND`` or numba_cpu)."""
    _backend[0] = name


def backend() -> str:
    return _backend[0] or default_backend()


def clear_program_cache() -> None:
    _PROGRAMS.clear()


def capturing() -> bool:
    return bool(_capture)


def check_capture(t: Tensor, what: str) -> None:
    """Inside ``fusegrad.compile`` tracing, reading a traced value cannot be captured."""
    if _capture and t.node.op != "buffer":
        raise CaptureError(with_location(
            f"{what} on a traced value inside a compiled function: the value does not exist "
            "while tracing; return the tensor instead", user_location()))


def realize(*tensors: Tensor) -> None:
    """Compute ``tensors`` and every other live pending tensor in one program."""
    wanted = [t for t in tensors if t.node.op != "buffer"]
    if not wanted:
        return
    targets = sorted({id(t): t for t in (*wanted, *PENDING.values()) if t.node.op != "buffer"}.values(),
                     key=lambda t: t.seq)
    outputs: list[Node] = []
    seen: set[Node] = set()
    for t in targets:
        if t.node not in seen:
            seen.add(t.node)
            outputs.append(t.node)
    arrays = run_graph(outputs)
    by_node = dict(zip(outputs, arrays))
    for t in targets:
        node = t.node
        buf = Buffer(node.shape, node.dtype, by_node[node])
        if t.requires_grad:
            if t._is_leaf:
                buf.owner = weakref.ref(t)
            else:
                buf.source = node
        t._bind(ops.buffer(buf))


def run_graph(outputs: list[Node]) -> list:
    """Flat arrays holding the values of ``outputs`` (compiling the program if it is new)."""
    STATS.realizations += 1
    key, leaves = structural_key(outputs)
    name = backend()
    entry = _PROGRAMS.get((name, key))
    if entry is None:
        t0 = time.perf_counter()
        compiled = compile_graph(Graph(tuple(outputs)), name)
        position = {n: i for i, n in enumerate(leaves)}
        entry = Entry(compiled, [position[n] for n in compiled.inputs])
        _PROGRAMS[(name, key)] = entry
        STATS.programs_compiled += 1
        STATS.compile_seconds += time.perf_counter() - t0
        STATS.last_report = compiled.report
    else:
        STATS.program_cache_hits += 1
    entry.runs += 1
    STATS.last_entry = entry
    inputs = [leaves[s].attrs[0].data for s in entry.slots]
    return entry.compiled.program.run(inputs)


def last_report():
    return STATS.last_report
