"""Realization: compile and run everything pending as one program, cached by graph structure."""
from __future__ import annotations

import time
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.pipeline import (CUDA_BACKEND, Compiled, compile_graph, default_backend,
                                 from_disk, load_cached, recompile, store_cached)
from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.device import copy_array, is_device_array
from ..ir.errors import CaptureError, with_location
from ..ir.graph import Graph, substitute
from ..ir.key import structural_key
from ..ir.node import Node
from ..lru import LRUCache, size_from_env
from . import capture, heap
from .device import CUDA_USED, node_device
from .provenance import user_location
from .tensor import PENDING, WRITES, Tensor


@dataclass
class Entry:
    compiled: Compiled
    slots: list[int]          # for each program input, its position among the graph's leaves
    key: tuple                # the graph's structural key
    runs: int = 0


@dataclass
class Stats:
    realizations: int = 0
    programs_compiled: int = 0   # programs made ready in this process: compiled or loaded from disk
    programs_loaded: int = 0     # of those, loaded from the disk program cache
    program_cache_hits: int = 0
    compile_seconds: float = 0.0
    last_report: object = None   # report of the last program compiled
    last_entry: object = None    # the last program run
    runs: int = 0                # programs run
    recent: deque = field(default_factory=lambda: deque(maxlen=16))  # the last programs run
    history: list = field(default_factory=list)

    def ran(self, entry: Any) -> None:
        """Note that ``entry``'s program runs now."""
        entry.runs += 1
        self.last_entry = entry
        self.runs += 1
        self.recent.append(entry)

    def ran_since(self, runs: int) -> list[Any]:
        """The programs run since ``runs`` was read (the last 16 at most), in order."""
        return list(self.recent)[-min(self.runs - runs, len(self.recent)):] \
            if self.runs > runs else []

    @property
    def programs_built(self) -> int:
        """Programs compiled through the passes, fusion and code generation in this process."""
        return self.programs_compiled - self.programs_loaded

    def reset(self) -> None:
        self.__init__()


STATS = Stats()
# Compiled programs by (backend, structural key): the least recently run past the size is
# dropped (it is loaded again from the disk program cache if it is needed again).
PROGRAM_CACHE_SIZE = 512
_PROGRAMS: LRUCache[tuple, Entry] = LRUCache(
    size_from_env("FUSEGRAD_PROGRAM_CACHE_SIZE", PROGRAM_CACHE_SIZE))
_backend: list[str | None] = [None]


def set_backend(name: str | None) -> None:
    """Choose the backend for later realizations (None: ``FUSEGRAD_BACKEND`` or numba_cpu)."""
    _backend[0] = name


def backend() -> str:
    return _backend[0] or default_backend()


def clear_program_cache() -> None:
    _PROGRAMS.clear()


def set_program_cache_size(size: int) -> None:
    """Keep at most ``size`` compiled programs in memory (default ``PROGRAM_CACHE_SIZE``, or
    ``FUSEGRAD_PROGRAM_CACHE_SIZE``); the least recently run beyond it are dropped."""
    _PROGRAMS.resize(size)


def capturing() -> bool:
    return capture.active() is not None


def check_capture(t: Tensor, what: str) -> None:
    """Inside ``fusegrad.compile`` tracing, reading a value back into Python cannot be captured:
    later calls replay the program without running the Python that would use it."""
    if capture.active() is not None:
        raise CaptureError(with_location(
            f"{what} on a tensor {t.node.type_str} inside a compiled function: the compiled "
            "program cannot feed a value back into Python control flow; return the tensor "
            "instead", user_location()))


def realize(*tensors: Tensor) -> None:
    """Compute ``tensors`` and every other live pending tensor in one program."""
    wanted = [t for t in tensors if t.node.op != "buffer"]
    if not wanted or capture.active() is not None:
        return  # inside a compiled function everything is realized when the trace ends
    targets, copies = [], []
    for t in pending_targets(wanted):
        src = host_copy_source(t)
        if src is None:
            targets.append(t)
        else:
            copies.append((t, src))
    if copies and targets:  # the program below may overwrite a source: copy its value now
        copies = [(t, src.copy()) for t, src in copies]
    for group in by_device(targets):
        nodes = output_nodes(group)
        outputs = list(dict.fromkeys(nodes))
        try:
            entry, leaves = prepare(outputs)
            arrays = run_entry(entry, leaves)
        except Exception:
            # A value the program could not compute (an index out of range) must not fail every
            # later realization too: the group stays pending but leaves PENDING, so only asking
            # for one of its tensors again computes it (and raises again if it is the culprit).
            for t in group:
                PENDING.pop(id(t), None)
            raise
        bind_outputs(group, nodes, dict(zip(outputs, arrays)))
    for t, src in copies:
        home = t._storage_node()
        np.copyto(home.attrs[0].data, src)
        t._bind(home)
        WRITES.pop(id(home.attrs[0].root()), None)


def host_copy_source(t: Tensor) -> np.ndarray | None:
    """The host array ``t``'s pending value copies whole into the host buffer ``t`` keeps
    (``load_state_dict``, ``p.data.copy_(w)``), or None. Such a copy is done by numpy: a
    program for it would be compiled once per model shape only to copy memory."""
    node, home = t.node, t._storage_node()
    if node.op != "detach" or node.inputs[0].op != "buffer" or home is None:
        return None
    src, dst = node.inputs[0].attrs[0], home.attrs[0]
    if src.dtype != dst.dtype or not (
            isinstance(src.data, np.ndarray) and isinstance(dst.data, np.ndarray)):
        return None
    return src.data if src.data.shape == dst.data.shape else None


def by_device(targets: list[Tensor]) -> list[list[Tensor]]:
    """``targets`` in one group per device (host values first): each group is one program on
    its device. Values reading only buffers that any device may read go with the host."""
    if not CUDA_USED[0]:
        return [targets] if targets else []
    groups: dict[str, list[Tensor]] = {}
    for t in targets:
        groups.setdefault(node_device(t.node) or "cpu", []).append(t)
    return [groups[d] for d in sorted(groups)]


def pending_targets(extra: list[Tensor]) -> list[Tensor]:
    """``extra`` and every live pending tensor, in creation order."""
    return sorted({id(t): t for t in (*extra, *PENDING.values()) if t.node.op != "buffer"
                   }.values(), key=lambda t: t.seq)


def output_nodes(targets: list[Tensor]) -> list[Node]:
    """The program output computing each of ``targets``: its pending node, or the ``assign``
    of that node into the buffer it keeps (``Tensor._storage_node``)."""
    nodes = []
    for t in targets:
        home = t._storage_node()
        nodes.append(t.node if home is None else ops.assign(home, t.node))
    return nodes


def bind_value(t: Tensor, array) -> None:
    """Make ``t`` hold ``array`` (the value of its current node), keeping autograd's links."""
    node = t.node
    buf = Buffer(node.shape, node.dtype, array)
    if t.requires_grad:
        if t._is_leaf:
            buf.owner = weakref.ref(t)
        else:
            buf.source = node
    t._bind(ops.buffer(buf))


def bind_outputs(targets: list[Tensor], nodes: list[Node], by_node: dict) -> None:
    """Give each of ``targets`` its value: the buffer an ``assign`` wrote, or a new one. Tensors
    computing the same node get arrays of their own: one may be updated in place later."""
    bound: set[int] = set()
    for t, node in zip(targets, nodes):
        if node.op == ops.ASSIGN:
            t._bind(node.inputs[0])
            WRITES.pop(id(node.inputs[0].attrs[0].root()), None)
            continue
        array = by_node[node]
        if id(array) in bound:
            array = copy_array(array)
        bound.add(id(array))
        bind_value(t, array)


def run_graph(outputs: list[Node]) -> list:
    """Flat arrays holding the values of ``outputs`` (compiling the program if it is new)."""
    entry, leaves = prepare(outputs)
    return run_entry(entry, leaves)


def prepare(outputs: list[Node]) -> tuple[Entry, list[Node]]:
    """The compiled program computing ``outputs`` (from the cache or compiled now) and the
    graph's buffer leaves in canonical order."""
    STATS.realizations += 1
    key, leaves = structural_key(outputs)
    name = backend()
    if CUDA_USED[0] and any(is_device_array(n.attrs[0].data) for n in leaves):
        name = CUDA_BACKEND  # the program runs where its buffers are
    entry = _PROGRAMS.get((name, key))
    if entry is None:
        t0 = time.perf_counter()
        # Compile from data-less stand-ins of the leaves: the cached program must not keep the
        # arrays of the step that first built it alive.
        stand_ins = [ops.buffer(Buffer(n.shape, n.dtype)) for n in leaves]
        _note_shared_arrays(leaves, stand_ins)
        graph = Graph(tuple(substitute(outputs, dict(zip(leaves, stand_ins)))))
        loaded = load_cached(name, key, graph, stand_ins)  # another process compiled it before
        if loaded is not None:
            compiled, slots = loaded
            STATS.programs_loaded += 1
        else:
            compiled = compile_graph(graph, name)
            position = {n: i for i, n in enumerate(stand_ins)}
            slots = [position[n] for n in compiled.inputs]
            store_cached(name, key, compiled, slots)
        entry = Entry(compiled, slots, key)
        _PROGRAMS[(name, key)] = entry
        STATS.programs_compiled += 1
        STATS.compile_seconds += time.perf_counter() - t0
        STATS.last_report = compiled.report
    else:
        STATS.program_cache_hits += 1
        heap.replayed(STATS.programs_compiled)
    return entry, leaves


def _note_shared_arrays(leaves: list[Node], stand_ins: list[Node]) -> None:
    """Stand-ins of leaves holding the same array (a parameter and the detached leaves an
    optimizer reads it through) view the first one's (``Buffer.alias_of``): the program's plan
    may then read them through the output of an update in place of it (``program_assigns``;
    every run checks that they still are one array)."""
    first: dict[int, Buffer] = {}
    for leaf, stand_in in zip(leaves, stand_ins):
        data = leaf.attrs[0].data
        if data is not None:
            buf = first.setdefault(id(data), stand_in.attrs[0])
            if buf is not stand_in.attrs[0]:
                stand_in.attrs[0].alias_of = buf


def run_entry(entry: Entry, leaves: list[Node]) -> list:
    STATS.ran(entry)
    inputs = [leaves[s].attrs[0].data for s in entry.slots]
    if entry.runs > 1 or not from_disk(entry.compiled):
        return entry.compiled.program.run(inputs)
    # The first run of what the disk cache gave: a failure (or outputs that do not fit the graph)
    # means an entry that is not what it claims to be, so it is compiled again from the graph.
    try:
        return _first_run(entry.compiled, inputs)
    except IndexError:
        raise   # a program's own range check on the data (a class index, a gather): the user's
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the compiled program decides
        warnings.warn(f"fusegrad: a program loaded from the disk cache failed its first run "
                      f"({type(exc).__name__}: {exc}); discarding it and compiling it again",
                      RuntimeWarning, stacklevel=3)
    compiled = recompile(entry.key, entry.compiled)
    stand_ins = structural_key(list(compiled.report.keyed.outputs))[1]
    position = {n: i for i, n in enumerate(stand_ins)}
    entry.compiled, entry.slots = compiled, [position[n] for n in compiled.inputs]
    store_cached(compiled.report.backend, entry.key, compiled, entry.slots)
    STATS.last_report = compiled.report
    return entry.compiled.program.run([leaves[s].attrs[0].data for s in entry.slots])


def _first_run(compiled: Compiled, inputs: list) -> list:
    """Run a program loaded from disk on copies of ``inputs``; once its outputs check out, its
    ``assign`` writes (outputs that are an input's copy) go to the inputs themselves, so a
    failing run changes nothing. An array passed as two inputs (a parameter and the detached
    leaf an optimizer reads it through) is one copy passed twice, so the run takes the path
    the real inputs take."""
    copies: dict[int, np.ndarray] = {}   # an array given twice is one copy, given twice
    staged = []
    for a in inputs:
        if id(a) not in copies:
            copies[id(a)] = a.copy()
        staged.append(copies[id(a)])
    arrays = _checked(compiled, compiled.program.run(staged))
    position = {id(a): j for j, a in enumerate(staged)}
    for k, a in enumerate(arrays):
        j = position.get(id(a))
        if j is not None:
            np.copyto(inputs[j], a)
            arrays[k] = inputs[j]
    return arrays


def _checked(compiled: Compiled, arrays: list) -> list:
    """``arrays`` if they can be the values of the graph's outputs (ValueError otherwise)."""
    outputs = compiled.report.traced.outputs
    if len(arrays) != len(outputs) or any(
            not isinstance(a, np.ndarray) or a.size != int(np.prod(n.shape)) or a.dtype != n.dtype
            for a, n in zip(arrays, outputs)):
        raise ValueError("its outputs do not match the graph's")
    return arrays


def last_report():
    return STATS.last_report
