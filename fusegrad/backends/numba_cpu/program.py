"""A Schedule compiled for the CPU: kernels loaded from the cache, a buffer plan, a lean run loop.

``NumbaProgram.run`` is itself generated Python: one line per item, calling the kernel
dispatcher (or numpy, for externs) with arrays held in local variables, so a training step pays
the dispatcher's own cost per kernel and nothing more. ``program.describe()`` prints it.

A kernel argument that starts inside a buffer (``lowering.load_base``: the load's offset is not in
the kernel's source) is a 1-D slice ``buf[base:]``: made once, when the program's buffers are
allocated, for the program's own intermediates; once per run, at the top of ``run``, for inputs
and outputs (their arrays change from call to call).
"""
from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.dtypes import to_numpy
from ...ir.errors import FusegradError
from ...ir.node import Node
from ...ir.collective import allreduce_into
from ...ir.schedule import Extern, Kernel, Schedule
from ...ir.view import View
from ..lowering import kernel_work
from . import blas, externs
from .cache import STATS as KERNEL_STATS, cache_enabled, in_memory, kernel_dir, load_kernel
from .fpenv import flushing
from .program_assigns import (AssignDecision, AssignReason, assign_lines, inputs_share_memory,
                              plan_assigns, same_memory_now)
from .progress import CompileProgress
from .render import KernelSource, kernel_source, update_sources
from .workers import MIN_KERNELS, compile_ahead

# Off unless asked for. Measured on the 2-core CI machines: a prange kernel beside OpenBLAS's
# threads, which spin for a while after every GEMM, ran a 200k-element SGD update 50x slower than
# serial; cnn's program went from 38 to 113 ms at 2**20; attn's 10M-element softmax kernel took
# 33 ms in parallel after a GEMM against 17 ms serial (15 ms in parallel with idle BLAS threads).
DEFAULT_PARALLEL_THRESHOLD = 1 << 62


def parallel_threshold() -> int:
    """Kernels doing more innermost iterations than this get ``prange``
    (env ``FUSEGRAD_PARALLEL_THRESHOLD``; by default no kernel does)."""
    return int(os.environ.get("FUSEGRAD_PARALLEL_THRESHOLD", DEFAULT_PARALLEL_THRESHOLD))


@dataclass
class BufferPlan:
    """Where the intermediates live: blocks owned by the program, shared by liveness.

    Attributes:
        nodes: the intermediates, in the order their items run.
        block_of: block index of each intermediate (it uses ``node.size`` elements of the block
            from ``offset_of``, 0 unless placed in a concatenation).
        blocks: (dtype, elements) of each block.
        live: (defining item, last reading item) of each intermediate.
        offset_of: the element each piece of a placed concatenation starts at in its block.
        placed: the concat items whose pieces are all written where the concatenation keeps
            them (``place_concats``): the item itself copies nothing.
    """

    nodes: list[Node] = field(default_factory=list)
    block_of: dict[Node, int] = field(default_factory=dict)
    blocks: list[tuple[str, int]] = field(default_factory=list)
    live: dict[Node, tuple[int, int]] = field(default_factory=dict)
    offset_of: dict[Node, int] = field(default_factory=dict)
    placed: set[int] = field(default_factory=set)

    @property
    def total_bytes(self) -> int:
        return sum(to_numpy(dt).itemsize * n for dt, n in self.blocks)

    @property
    def no_reuse_bytes(self) -> int:
        return sum(to_numpy(n.dtype).itemsize * n.size for n in self.nodes)

    def temps(self) -> list[tuple[int, int, int]]:
        """(block, elements, offset) of each intermediate, in ``nodes`` order."""
        temps = [(self.block_of[n], n.size, self.offset_of.get(n, 0)) for n in self.nodes]
        assert all(offset + size <= self.blocks[block][1] for block, size, offset in temps)
        return temps


def place_concats(schedule: Schedule) -> dict[int, dict[Node, int]]:
    """The concatenations whose pieces can be written where the result keeps them: concat item
    -> {piece: its first element in the result}.

    A concatenation along its first axis of size over 1 (each piece one contiguous run of the
    result) whose result is an intermediate, each of whose pieces is an intermediate read whole
    and in order (a contiguous view of all its elements), of the result's dtype, in no other
    placed concatenation (nor the result of one) and once in this one. Such pieces (a recurrent
    layer's per-step gradients, stacked for the weight gradient's product) become slices of the
    result's block, and the concatenation copies nothing."""
    outputs, inputs = set(schedule.outputs), set(schedule.inputs)
    written = set(schedule.materialised())
    taken: set[Node] = set()     # pieces and results of the concatenations placed so far
    found: dict[int, dict[Node, int]] = {}
    for t, item in enumerate(schedule.items):
        if not isinstance(item, Extern) or item.node.op != "concat":
            continue
        node, axis = item.node, item.node.attrs[0]
        if node in outputs or node in inputs or math.prod(node.shape[:axis]) != 1:
            continue
        offsets: dict[Node, int] = {}
        at = 0
        for load in item.loads:
            src, view = load.src, load.view
            if (src in outputs or src in inputs or src not in written or src in taken
                    or src in offsets or src is node or src.dtype != node.dtype
                    or view != View.contiguous(view.shape)
                    or math.prod(view.shape) != src.size):
                break
            offsets[src] = at
            at += src.size
        else:
            if at == node.size:
                found[t] = offsets
                taken.update(offsets)
                taken.add(node)   # a placed result is no piece of a later concatenation
    return found


def concat_lines(schedule: Schedule | None, plan: Any) -> list[str]:
    """The placed concatenations of a program's plan (``place_concats``), a line each, for
    ``fusegrad dump``; none for a plan without them (or without its Schedule)."""
    placed = sorted(getattr(plan, "placed", ()))
    if schedule is None or not placed:
        return []
    return [f"  [{t}] {schedule.items[t].name}: {len(schedule.items[t].loads)} pieces written "
            f"into its block by the items computing them (no copy)" for t in placed]


def plan_buffers(schedule: Schedule) -> BufferPlan:
    """Give each intermediate a block: a free block of its dtype that is large enough (the smallest
    such), else a new one. A block is free once the last item reading its current owner has run.
    The pieces of a placed concatenation (``place_concats``) are slices of the result's block,
    which is taken when the first piece is written and kept until the last read of any of them."""
    outputs, inputs = set(schedule.outputs), set(schedule.inputs)
    last_read: dict[Node, int] = {}
    for t, item in enumerate(schedule.items):
        loads = item.loads.values() if isinstance(item, Kernel) else item.loads
        for load in loads:
            last_read[load.src] = t
    concats = place_concats(schedule)
    whole: dict[Node, Node] = {}   # piece -> the concatenation it is placed in
    for t, offsets in concats.items():
        for piece in offsets:
            whole[piece] = schedule.items[t].node
    group_end = {schedule.items[t].node: t for t in concats}
    for piece, result in whole.items():
        group_end[result] = max(group_end[result], last_read.get(piece, 0),
                                last_read.get(result, 0))
    plan = BufferPlan()
    plan.placed = set(concats)
    for offsets in concats.values():
        plan.offset_of.update(offsets)
    free: list[int] = []
    release: dict[int, list[int]] = {}

    def take(node: Node, t: int, end: int) -> int:
        fits = [b for b in free if plan.blocks[b][0] == node.dtype and plan.blocks[b][1] >= node.size]
        if fits:
            block = min(fits, key=lambda b: plan.blocks[b][1])
            free.remove(block)
        else:
            block = len(plan.blocks)
            plan.blocks.append((node.dtype, node.size))
        release.setdefault(max(end, t), []).append(block)
        return block

    for t, item in enumerate(schedule.items):
        written = item.outputs if isinstance(item, Kernel) else (item.node,)
        for node in written:
            if node in outputs or node in inputs or node in plan.live:
                continue
            result = whole.get(node)
            if result is not None:   # a piece: the first one takes its concatenation's block
                if result not in plan.block_of:
                    plan.block_of[result] = take(result, t, group_end[result])
                plan.block_of[node] = plan.block_of[result]
            elif node not in plan.block_of:   # (a placed result has its block already)
                plan.block_of[node] = take(node, t, last_read.get(node, t))
            plan.nodes.append(node)
            plan.live[node] = (t, max(last_read.get(node, t), t))
        free.extend(release.pop(t, []))
    return plan


def _np_dtype(dtype: str) -> str:
    return "np.bool_" if dtype == "bool" else f"np.{dtype}"


@dataclass
class _CompiledKernel:
    kernel: Kernel
    source: KernelSource
    call_name: str


class NumbaProgram:
    """A Schedule ready to run: ``run(inputs) -> outputs`` on flat contiguous numpy arrays."""

    def __init__(self, schedule: Schedule, kernels: list[_CompiledKernel], plan: BufferPlan,
                 run_source: str, namespace: dict, prebound: list[tuple[str, str]]):
        self.schedule = schedule
        self.inputs: list[Node] = list(schedule.inputs)  # what ``run`` reads, in order
        self.prebound = prebound
        self.kernels = kernels
        self.plan = plan
        self.run_source = run_source
        self._namespace = namespace
        self.assigns: list[AssignDecision] = []   # how each assign output is written
        self.lazy_kernels: list[_CompiledKernel] = []   # loaded on their first call
        self.names: dict[Node, str] = {}          # run's local name of each input/intermediate

    @property
    def sources(self) -> list[KernelSource]:
        """The generated module of each kernel, in schedule order."""
        return [k.source for k in self.kernels]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the schedule.

        Args:
            inputs: one flat contiguous array per ``self.inputs`` entry, in that order.

        Returns:
            A flat array per ``schedule.outputs`` entry: fresh (an output that is an input is
            a copy of it), except that an ``assign`` output is its target's input array (see
            ``self.assigns`` for how each was written).
        """
        # First call: allocate the planned blocks, then replace this method by the generated loop.
        p = self.plan
        self.run = bind_run(self._namespace, p.blocks, p.temps(), self.prebound, self.run_source)
        return self.run(inputs)

    def describe(self) -> str:
        """Kernels (name, serial/parallel, source hash), externs, buffer plan and the run loop."""
        s = self.schedule
        lines = [(f"NumbaProgram: {len(s.items)} items ({len(s.kernels)} kernels, {len(s.externs)} "
                  f"externs), {len(self.inputs)} inputs, {len(s.outputs)} outputs")]
        compiled = {id(k.kernel): k for k in self.kernels}
        for t, item in enumerate(s.items):
            if isinstance(item, Kernel):
                ck = compiled[id(item)]
                mode = "parallel" if ck.source.parallel else "serial"
                lines.append(f"  [{t}] kernel {ck.source.function:<32} {mode:<8} "
                             f"hash {ck.source.hash[:12]}  work {kernel_work(item)}")
            else:
                lines.append(f"  [{t}] extern {item.name} -> {item.node.type_str}")
        p = self.plan
        lines.append(f"buffer plan: {len(p.nodes)} intermediates in {len(p.blocks)} blocks, "
                     f"{p.total_bytes} B (without reuse {p.no_reuse_bytes} B)")
        for j, node in enumerate(p.nodes):
            first, last = p.live[node]
            at = f" from element {p.offset_of[node]}" if node in p.offset_of else ""
            lines.append(f"  t{j}: {node.type_str} in block{p.block_of[node]}{at} "
                         f"(written by item {first}, last read by item {last})")
        lines.extend(assign_lines(self.assigns, self.names))
        lines.append(self.run_source.rstrip())
        return "\n".join(lines)


def bind_run(ns: dict, blocks: list[tuple[str, int]], temps: list[tuple[int, int, int]],
             prebound: list[tuple[str, str]], run_source: str):
    """The generated ``run`` function, bound in ``ns`` to freshly allocated buffers.

    Args:
        ns: the program's namespace (numpy, extern helpers, kernel dispatchers, masked views).
        blocks: (dtype, elements) of each planned block, bound as ``block{i}``.
        temps: (block, elements, offset) of each intermediate ``t{j}``: those elements of the
            block from ``offset`` on.
        prebound: (name, expression) of what is made once: views of planned buffers, and the
            arrays of values that are only copied into an assign's target.
        run_source: the text of ``def run(inputs): ...``.
    """
    for i, (dtype, size) in enumerate(blocks):
        ns[f"block{i}"] = np.empty(size, to_numpy(dtype))
    for j, (block, size, offset) in enumerate(temps):
        ns[f"t{j}"] = ns[f"block{block}"][offset:offset + size]
    for name, expr in prebound:  # numpy views of the program's own buffers, made once
        ns[name] = eval(expr, ns)
    exec(compile(run_source, "<fusegrad run>", "exec"), ns)  # noqa: S102 - our generated loop
    return flushing(ns["run"])


_ITEM = re.compile(r"  # \[(\d+)\]")


def timed_run(program: Any) -> tuple[Callable[[list[np.ndarray]], list[np.ndarray]],
                                     list[list[float]]]:
    """A copy of ``program.run`` that reads the clock around every item (for benchmarks that need
    each kernel's time inside real steps) and the list each call appends its readings to: the
    call's start, then (before, after) of each item in schedule order, then the call's end.
    ``program`` must have run once.
    """
    stamps: list[list[float]] = []
    ns = dict(program._namespace)
    ns["_clock"], ns["_stamps"] = time.perf_counter, stamps
    lines = program.run_source.rstrip().splitlines()
    end = next((k for k, line in enumerate(lines) if k and line.startswith("def ")), len(lines))
    out = [lines[0], "    _s = [_clock()]", "    _stamps.append(_s)"]
    for line in lines[1:end]:
        if line.lstrip().startswith("return "):
            out.append("    _s.append(_clock())")
        if _ITEM.search(line):
            out += ["    _s.append(_clock())", line, "    _s.append(_clock())"]
        else:
            out.append(line)
    out.extend(lines[end:])  # the copying loop of aliased inputs, untimed
    exec(compile("\n".join(out), "<fusegrad timed run>", "exec"), ns)  # noqa: S102
    return flushing(ns["run"]), stamps


def compile_schedule(schedule: Schedule, targets: dict[int, Node] | None = None) -> NumbaProgram:
    """Generate, load (or compile) every kernel of ``schedule`` and plan its buffers.

    Args:
        schedule: the fused program (see ``fusegrad.ir.schedule``). A kernel whose innermost
            loops run more than ``parallel_threshold()`` iterations gets ``prange``.
        targets: output index -> buffer leaf for the outputs that are ``assign`` writes. The
            run returns the target's input array for each, holding the value. Where
            ``program_assigns.plan_assigns`` allows it the item computing the value writes
            straight into that array; otherwise the run copies the value into it after every
            item (so every read sees the value before the write). Targets that the schedule
            does not read are inputs after ``schedule.inputs``.

    Returns:
        The program; its intermediate buffers are allocated by the first ``run``.
    """
    targets = targets or {}
    threshold = parallel_threshold()
    plan = plan_buffers(schedule)
    inputs = list(schedule.inputs)
    inputs += [n for n in dict.fromkeys(targets.values()) if n not in set(schedule.inputs)]
    names: dict[Node, str] = {n: f"x{i}" for i, n in enumerate(inputs)}
    for j, node in enumerate(plan.nodes):
        names[node] = f"t{j}"
    materialised = set(schedule.materialised())
    missing = [n for n in schedule.outputs if n not in names and n not in materialised]
    if missing:
        raise FusegradError(f"schedule outputs {missing} are neither inputs nor written by an item")

    namespace = base_namespace()
    kernels: list[_CompiledKernel] = []
    calls: dict[int, _CompiledKernel] = {}
    decisions = plan_assigns(schedule, targets, guarded=True, same_memory=same_memory_now)
    through: dict[int, dict[Node, Node]] = {}
    for d in decisions:
        if d.reason is AssignReason.UPDATED_IN_PLACE:
            through.setdefault(d.writer, {}).update(dict.fromkeys(d.through, d.value))
    sources: dict[int, KernelSource] = {}
    plain: dict[int, KernelSource] = {}   # the writers as the copying loop runs them
    for t, item in enumerate(schedule.items):
        if isinstance(item, Kernel):
            parallel = kernel_work(item) > threshold
            if t in through:
                sources[t], plain[t] = update_sources(item, parallel, through[t])
            else:
                sources[t] = kernel_source(item, parallel)
    dtypes = {t: ks.arg_dtypes for t, ks in sources.items()}
    new = {(ks.hash, dtypes[t]) for t, ks in sources.items() if not in_memory(ks, dtypes[t])}
    progress = CompileProgress(len(new), kernel_dir() if cache_enabled() else None)
    if len(new) >= MIN_KERNELS:
        first = {}
        for t, ks in sources.items():
            first.setdefault((ks.hash, dtypes[t]), (ks, dtypes[t]))
        compile_ahead([first[k] for k in first if k in new], progress)
    for t, item in enumerate(schedule.items):
        if isinstance(item, Kernel):
            ks = sources[t]
            fresh = (ks.hash, dtypes[t]) in new
            compiled = KERNEL_STATS.kernels_compiled
            fn = load_kernel(ks, dtypes[t])
            if fresh:
                new.discard((ks.hash, dtypes[t]))
                progress.prepared(KERNEL_STATS.kernels_compiled > compiled)
            call = _free_name(ks, namespace)
            namespace[call] = fn
            calls[t] = _CompiledKernel(item, ks, call)
            kernels.append(calls[t])

    in_place = {d.value: d.target for d in decisions
                if d.reason in (AssignReason.STORED_IN_PLACE, AssignReason.UPDATED_IN_PLACE)}
    prebound: list[tuple[str, str]] = []
    body = _run_body(schedule, targets, names, in_place, "o", calls, namespace, prebound,
                     placed=plan.placed)
    run_source = "def run(inputs):\n" + "".join(f"    {line}\n" for line in body)
    lazy: list[_CompiledKernel] = []
    if in_place:
        # the decisions hold for the arrays they allow to share a target's memory only: other
        # aliased ones run the copying loop, with the writers that read their own arguments
        copy_calls = dict(calls)
        for t, ks in plain.items():
            if ks.hash != sources[t].hash:
                copy_calls[t] = _CompiledKernel(schedule.items[t], ks, _free_name(ks, namespace))
                namespace[copy_calls[t].call_name] = LazyKernel(ks, ks.arg_dtypes, namespace,
                                                                copy_calls[t].call_name)
                lazy.append(copy_calls[t])
        decision_of = {d.target: d for d in decisions if d.target in in_place.values()}
        written = tuple(sorted(inputs.index(t) for t in in_place.values()))

        def positions(leaves: tuple[Node, ...], target: Node) -> tuple[int, ...]:
            return tuple(sorted(inputs.index(n) for n in leaves if n is not target))
        shares = tuple(positions(decision_of[inputs[k]].shares, inputs[k]) for k in written)
        exact = tuple(positions(decision_of[inputs[k]].through, inputs[k]) for k in written)
        guard = f"inputs_share_memory(inputs, {written!r}, {shares!r}, {exact!r}, share_memo)"
        copying = _run_body(schedule, targets, names, {}, "c", copy_calls, namespace, prebound,
                            keep_copied=False, placed=plan.placed)
        run_source = ("def run(inputs):\n"
                      f"    if {guard}: return run_copying(inputs)\n"
                      + "".join(f"    {line}\n" for line in body)
                      + "\n\ndef run_copying(inputs):\n"
                      + "".join(f"    {line}\n" for line in copying))
    program = NumbaProgram(schedule, kernels, plan, run_source, namespace,
                           list(dict.fromkeys(prebound)))
    program.inputs = inputs
    program.assigns = decisions
    program.lazy_kernels = lazy
    program.names = names
    return program


def _free_name(ks: KernelSource, namespace: dict) -> str:
    """The kernel's function name, with ``_`` appended until no other name in ``namespace``."""
    call = ks.function
    while call in namespace:
        call += "_"
    return call


class LazyKernel:
    """A kernel loaded (or compiled) on its first call, which then takes its place in the
    namespace: the plain writer of an update read through its output, which only a copying run
    (inputs sharing memory the plan did not allow for) calls."""

    def __init__(self, source: KernelSource, arg_dtypes: tuple[str, ...], namespace: dict,
                 name: str):
        self.source, self.arg_dtypes = source, arg_dtypes
        self._namespace, self._name = namespace, name
        self._fn: Any = None

    def __call__(self, *args: Any) -> None:
        if self._fn is None:   # a copy of the namespace (``timed_run``) keeps calling this
            self._fn = self._namespace[self._name] = load_kernel(self.source, self.arg_dtypes)
        self._fn(*args)


def _run_body(schedule: Schedule, targets: dict[int, Node], base_names: dict[Node, str],
              in_place: dict[Node, Node], prefix: str, calls: dict[int, _CompiledKernel],
              namespace: dict, prebound: list[tuple[str, str]], keep_copied: bool = True,
              placed: set[int] = frozenset()) -> list[str]:
    """The lines of one generated run function.

    Args:
        base_names: the local names of inputs (``x{i}``) and planned intermediates (``t{j}``).
        in_place: value -> target of the assigns whose value is written straight into the
            target's array (the item gets that array as its output).
        prefix: the names of the outputs' own arrays (``{prefix}{j}``).
        calls: the loaded kernel of each kernel item, by item index.
        prebound: what is made once (appended to).
        keep_copied: allocate the arrays of values that are only copied into a target once,
            for every run (False for the copying loop that runs only on aliased inputs).
        placed: concat items whose pieces were written in place (``BufferPlan.placed``).
    """
    names = dict(base_names)
    for value, target in in_place.items():
        names[value] = names[target]
    outputs = [n for n in dict.fromkeys(schedule.outputs) if n not in names]
    for j, node in enumerate(outputs):
        names[node] = f"{prefix}{j}"
    inputs = [n for n, name in base_names.items() if name.startswith("x")]
    body: list[str] = []
    if inputs:
        body.append(f"({', '.join(base_names[n] for n in inputs)},) = inputs")
    # A value only written into an assign's target is never returned: its array is allocated
    # once and reused by every run (no fresh pages to fault in before the copy).
    returned = {n for i, n in enumerate(schedule.outputs) if i not in targets}
    kept = {schedule.outputs[i] for i in targets} - returned if keep_copied else set()
    for node in outputs:
        alloc = f"np.empty({node.size}, {_np_dtype(node.dtype)})"
        if node in kept:
            prebound.append((names[node], alloc))
        else:
            body.append(f"{names[node]} = {alloc}  # {node.type_str}")
    head = len(body)                 # where the per-run slices go: before any item
    per_run: dict[str, str] = {}     # slices of inputs and outputs, made by each run

    def operand(node: Node, base: int) -> str:
        name = names[node]
        if not base:
            return name
        view = f"{name}_{base}"
        if name.startswith("t"):  # a planned buffer never moves: its slice is made once
            prebound.append((view, f"{name}[{base}:]"))
        else:
            per_run.setdefault(view, f"{name}[{base}:]")
        return view

    uses = _staged_operands(schedule)
    staged: dict[tuple[Node, View], str] = {}
    for t, item in enumerate(schedule.items):
        if isinstance(item, Kernel):
            ck = calls[t]
            args = ", ".join([operand(n, base) for n, base in ck.source.operands]
                             + ([] if ck.source.extent is None else [str(ck.source.extent)]))
            body.append(f"{ck.call_name}({args})  # [{t}]")
            continue
        if t in placed:
            body.append(f"pass  # [{t}] extern {item.name}: its pieces were written in place")
            continue
        for load in item.loads:
            key = (load.src, load.view)
            if key in uses and key not in staged:  # copied where it is first read
                staged[key] = name = f"stage{prefix}{len(staged)}"
                prebound.append((name, f"np.empty({load.view.shape}, "
                                       f"{_np_dtype(load.src.dtype)})"))
                expr = externs.view_expr(names[load.src], load.src.size, load.view,
                                         load.src.dtype, "")
                body.append(f"np.copyto({name}, {expr})  # staged for item {t}: a transposed "
                            f"operand of {uses[key]} products, made contiguous once")
        body.append(_extern_call(item, t, names, namespace, prebound, staged))
    body[head:head] = [f"{view} = {expr}" for view, expr in per_run.items()]
    body.extend(_return_lines(schedule.outputs, targets, names))
    return body


def _return_lines(outputs: list[Node], targets: dict[int, Node], names: dict[Node, str]
                  ) -> list[str]:
    """The end of ``run``: copies of inputs that are results, then the ``assign`` writes (after
    every read of their targets), then the results."""
    results = [names[targets[i]] if i in targets else _output_expr(n, i, outputs, names)
               for i, n in enumerate(outputs)]
    lines: list[str] = []
    for i, expr in enumerate(results):
        if expr.endswith(".copy()"):  # taken before any write can change the input it copies
            lines.append(f"r{i} = {expr}")
            results[i] = f"r{i}"
    staged: dict[str, str] = {}
    writes: list[str] = []
    for i, target in targets.items():
        value, dest = names[outputs[i]], names[target]
        if value == dest:
            continue  # the value is the target's own: nothing to write
        if value.startswith("x") and value not in staged:  # an input, maybe written here too
            staged[value] = f"v{len(staged)}"
            lines.append(f"{staged[value]} = {value}.copy()")
        writes.append(f"np.copyto({dest}, {staged.get(value, value)})  # assign")
    lines.extend(writes)
    lines.append(f"return [{', '.join(results)}]")
    return lines


def _output_expr(node: Node, i: int, outputs: list[Node], names: dict[Node, str]) -> str:
    if node in outputs[:i] or names[node].startswith("x"):
        # each entry gets an array of its own: a result never shares memory with an input
        return f"{names[node]}.copy()"
    return names[node]


# A transposed operand that this many products read is copied into a contiguous array once:
# numpy's BLAS multiplies (32, 256) by a transposed (1024, 256) weight in 0.27 ms and by a
# contiguous copy in 0.19 ms, and the transposed copy takes 0.41 ms (an LSTM's step reads W_hh^T
# once per time step).
STAGE_MIN_PRODUCTS = 8


def _staged_operands(schedule: Schedule) -> dict[tuple[Node, View], int]:
    """(src, view) -> how many matmuls of ``schedule`` read it, for each transposed matrix that
    at least ``STAGE_MIN_PRODUCTS`` of them read."""
    uses: dict[tuple, int] = {}
    for item in schedule.items:
        if isinstance(item, Extern) and item.node.op == "matmul":
            for load in item.loads:
                v = load.view
                if v.masks is None and len(v.shape) >= 2 and v.strides[-2] == 1 \
                        and v.strides[-1] == v.shape[-2] and v.shape[-1] > 1:
                    uses[(load.src, v)] = uses.get((load.src, v), 0) + 1
    return {key: n for key, n in uses.items() if n >= STAGE_MIN_PRODUCTS}


def _blas_product(node: Node, operands: list[tuple[Node, View] | None]) -> bool:
    """Whether a product is one ``blas.gemm`` call: float operands, 2-D or batched 3-D, whose
    matrices are BLAS operands as their views read them (None: a staged contiguous copy; a
    masked view is made dense)."""
    rank = len(node.shape)
    if node.dtype not in ("float32", "float64") or rank not in (2, 3):
        return False
    for operand in operands:
        if operand is None:
            continue
        src, view = operand
        if src.dtype != node.dtype or len(view.shape) != rank:
            return False
        if view.masks is None and not (blas.blas_operand(
                tuple(view.shape[-2:]), tuple(view.strides[-2:])) and min(view.strides) >= 0):
            return False
    return True


class LazyGemm:
    """``blas.gemm(dtype, batched)``, loaded at a program's first product (MKL's takes ~0.1 s
    to load) and then put in its place in the program's namespace."""

    def __init__(self, dtype: str, batched: bool, namespace: dict, name: str):
        self.dtype, self.batched, self.namespace, self.name = dtype, batched, namespace, name

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        fn = self.namespace[self.name] = blas.gemm(self.dtype, self.batched)
        fn(a, b, out)


def base_namespace() -> dict:
    """What every program's run loop reads besides its kernels and views."""
    ns: dict = {"np": np, "dense": externs.dense, "scatter_add": externs.scatter_add,
                "allreduce": allreduce_into, "inputs_share_memory": inputs_share_memory,
                "share_memo": [None, None, False]}
    for dtype in ("float32", "float64"):
        for batched in (False, True):
            name = f"{'b' if batched else ''}gemm_{dtype}"
            ns[name] = LazyGemm(dtype, batched, ns, name)
    return ns


def _extern_call(item: Extern, t: int, names: dict[Node, str], namespace: dict,
                 prebound: list[tuple[str, str]],
                 staged: dict[tuple[Node, View], str] | None = None) -> str:
    node = item.node
    args = [(load.src, load.view) for load in item.loads]
    out_view = View.contiguous(node.shape)
    views = []
    for j, (src, view) in enumerate(args + [(node, out_view)]):
        name = f"view{t}_{j}"
        if staged and (src, view) in staged:
            views.append(staged[(src, view)])
            continue
        if view.masks is not None:
            namespace[name] = view
            expr = externs.view_expr(names[src], src.size, view, src.dtype, name)
        else:
            expr = externs.view_expr(names[src], src.size, view, src.dtype, name)
            if names[src].startswith("t"):  # a planned buffer never moves: build its view once
                prebound.append((name, expr))
                expr = name
        views.append(expr)
    if node.op == "matmul":
        if _blas_product(node, [None if staged and a in staged else a for a in args]):
            batched = "b" if len(node.shape) == 3 else ""
            return (f"{batched}gemm_{node.dtype}({views[0]}, {views[1]}, {views[2]})"
                    f"  # [{t}] extern {item.name}")
        return f"np.matmul({views[0]}, {views[1]}, out={views[2]})  # [{t}] extern {item.name}"
    if node.op == "concat":
        parts = "".join(f"{v}, " for v in views[:-1])
        return (f"np.concatenate(({parts}), {node.attrs[0]}, out={views[-1]})"
                f"  # [{t}] extern {item.name}")
    if node.op == "allreduce":
        return f"allreduce({views[0]}, {views[1]}, {node.attrs[0]!r})  # [{t}] extern {item.name}"
    if node.op == "scatter_add":
        return (f"scatter_add({names[node]}, {views[0]}, {views[1]}, {node.attrs[0]}, {node.shape})"
                f"  # [{t}] extern {item.name}")
    raise FusegradError(f"no CPU extern for op {node.op!r}")
