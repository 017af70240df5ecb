"""A Schedule compiled for a CUDA GPU: kernels from the cache, device buffers, a launch loop.

``CudaProgram.run(inputs)`` takes one flat array per input. Device arrays are used where they
are; host arrays (the optimizer's 0-d hyperparameters, random keys, constant tables: the
values every device may read) are copied to the device for the call. Every item then runs on
the GPU in schedule order on the default stream, and the outputs are device arrays: nothing
waits for the GPU, except a program with gather bounds checks, which reads its error flag once
at the end (one synchronisation) to raise the IndexError the CPU backend raises.

Intermediates live in device blocks planned by liveness (``numba_cpu.program.plan_buffers``),
allocated by the first run. ``assign`` outputs are written into their targets' device arrays
after every item has run, so every read sees the old value; a target held in host memory is
copied back.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from ...errors import CodegenError
from ...ir.device import (copy_array, device_empty, is_device_array, memory_range, simulator_enabled,
                          to_device)
from ...ir.node import Node
from ...ir.schedule import Extern, Kernel, Schedule
from ...ir.view import View
from ..numba_cpu.program import BufferPlan, plan_buffers
from ..numba_cpu.program_assigns import (AssignDecision, AssignReason, assign_lines, may_alias,
                                        plan_assigns)
from . import externs
from .cache import load_kernel
from .render import CudaKernelSource, kernel_source

Env = dict[Node, Any]
# fusegrad sizes every grid itself (a block per row, or enough blocks for the elements): Numba's
# warning that a small grid under-uses the GPU (printed on a GPU for tiny tensors) is about those
# choices, not the user's code
warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU",
                        category=NumbaPerformanceWarning)
SIMULATOR_SWITCH_INTERVAL = 0.0005   # seconds (Python's default: 0.005)
STAGED_ELEMENTS = 4096   # host inputs up to this size travel together, once per change


@dataclass
class _Launch:
    """One kernel item: its source and loaded dispatcher."""

    item: int
    source: CudaKernelSource
    fn: Any


class CudaProgram:
    """A Schedule ready to run on the GPU: ``run(inputs) -> outputs`` on flat arrays."""

    def __init__(self, schedule: Schedule, targets: dict[int, Node]):
        self.schedule = schedule
        self.targets = targets
        inputs = list(schedule.inputs)
        inputs += [n for n in dict.fromkeys(targets.values()) if n not in set(schedule.inputs)]
        self.inputs: list[Node] = inputs
        self.plan: BufferPlan = plan_buffers(schedule)
        self.launches: list[_Launch] = []
        self.sources: list[CudaKernelSource] = []
        for t, item in enumerate(schedule.items):
            if isinstance(item, Kernel):
                ks = kernel_source(item)
                self.sources.append(ks)
                self.launches.append(_Launch(t, ks, load_kernel(ks)))
            elif item.node.op not in ("matmul", "scatter_add"):
                raise CodegenError(f"{item.name}: {item.node.op} has no CUDA implementation "
                                   "(the numba_cuda backend runs matmul and scatter_add)")
        self.checks: list[tuple[_Launch | None, str]] = [
            (launch, msg) for launch in self.launches for msg in launch.source.checks]
        # a scatter-add's indices are checked by its kernel (it adds nothing outside ``out``)
        self._scatter_codes: dict[int, int] = {}
        for t, item in enumerate(schedule.items):
            if isinstance(item, Extern) and item.node.op == "scatter_add":
                size = item.node.shape[item.node.attrs[0]]
                self.checks.append((None, f"index out of range in scatter_add along an axis of "
                                          f"size {size} (the gradient of an indexing, embedding "
                                          f"or gather)"))
                self._scatter_codes[t] = len(self.checks)
        # how each assign is written (``describe``): the plan for any arrays, until a run uses
        # the one made for the arrays it is given
        self.assigns: list[AssignDecision] = plan_assigns(schedule, targets, simd=False)
        self._alias_memo: list = [None, None, ()]
        self._kind_memo: list = [None, None, ()]   # ids, arrays (held: ids stay theirs), key
        self._targets = {inputs.index(t) for t in targets.values()}
        self._runs: dict[tuple, _Run] = {}
        self._blocks: dict[Node, Any] = {}
        self._error: Any = None
        self._prepared = False
        self.syncs = 0     # device synchronisations ``run`` made (tests count them)
        self.uploads = 0   # host-to-device copies ``run`` made

    # ------------------------------------------------------------------ first run of a kind
    def _prepare(self) -> None:
        blocks = [device_empty(n, dt) for dt, n in self.plan.blocks]
        for node, (block, size, offset) in zip(self.plan.nodes, self.plan.temps()):
            self._blocks[node] = blocks[block][offset:offset + size]
        if self.checks:
            self._error = to_device(np.zeros(1, np.int32))

    def _make_run(self, staged: tuple[bool, ...], groups: tuple[int, ...]) -> "_Run":
        """The launch loop for inputs of which those marked in ``staged`` are small host arrays
        (copied to the device in one piece per dtype) and which share memory as ``groups`` says
        (the first input of each one's group): an assign whose target nothing reads after its
        value is written gets the target's array as that value's."""
        if not self._prepared:
            self._prepare()
            self._prepared = True
        position = {n: k for k, n in enumerate(self.inputs)}

        def alias(leaf: Node, target: Node) -> bool:
            if leaf in position and target in position:
                return groups[position[leaf]] == groups[position[target]]
            return may_alias(leaf, target)
        # not in place: targets sharing memory with another target (the plan compares a target
        # with the other leaves only), and every assign of a program with bounds checks (a
        # failed check raises after every item has run: the targets must still be untouched)
        shared = Counter(groups[position[t]] for t in set(self.targets.values()))
        decisions = []
        for d in plan_assigns(self.schedule, self.targets, simd=False, alias=alias):
            if d.reason is AssignReason.STORED_IN_PLACE:
                if self.checks:
                    d = replace(d, reason=AssignReason.CHECKED_AFTER_ITEMS)
                elif shared[groups[position[d.target]]] > 1:
                    d = replace(d, reason=AssignReason.TARGET_SHARES_A_TARGET)
            decisions.append(d)
        in_place = {d.value: d.target for d in decisions
                    if d.reason is AssignReason.STORED_IN_PLACE}
        run = _Run(self, staged, in_place)
        run.assigns = decisions
        launches = {launch.item: launch for launch in self.launches}
        run.steps = [run.kernel_step(launches[t], self._error) if isinstance(item, Kernel)
                     else run.extern_step(item, t)
                     for t, item in enumerate(self.schedule.items)]
        return run

    # ------------------------------------------------------------------ every run
    def run(self, inputs: list[Any]) -> list[Any]:
        """Run the schedule on the GPU.

        Args:
            inputs: one flat array per ``self.inputs`` entry: device arrays, or host arrays that
                are copied to the device for this call (those of at most ``STAGED_ELEMENTS``
                elements that no assign writes together, in one copy per dtype, and only when
                their values changed).

        Returns:
            A flat device array per ``schedule.outputs`` entry (an ``assign`` output is its
            target's array: the device array passed in, or the host one written back).
        """
        memo = self._kind_memo   # a training step passes the same arrays on every call
        ids = list(map(id, inputs))
        if ids != memo[0]:
            staged = tuple(not is_device_array(a) and a.size <= STAGED_ELEMENTS
                           and k not in self._targets for k, a in enumerate(inputs))
            memo[:] = [ids, tuple(inputs),
                       (staged, self._alias_groups(inputs) if self.targets else ())]
        key = memo[2]
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = self._make_run(*key)
        self.assigns = run.assigns
        with _quiet():
            return run(inputs)

    def _alias_groups(self, inputs: list[Any]) -> tuple[int, ...]:
        """For each input, the lowest position among the inputs whose memory overlaps its own,
        directly or through others (its own where none does): a parameter and the detached leaf
        an optimizer reads it through are one array. Looked up by the arrays' identities: a
        training step passes the same parameter and state arrays on every call."""
        memo = self._alias_memo
        ids = list(map(id, inputs))
        if ids == memo[0]:
            return memo[2]
        ranges = [memory_range(a) for a in inputs]
        groups = list(range(len(inputs)))
        run: list[int] = []     # inputs overlapping one another, in address order
        end = 0
        for k in sorted(range(len(inputs)), key=lambda k: ranges[k][0]):
            start, stop = ranges[k]
            if start == stop:
                continue        # an empty array shares nothing
            if run and start < end:
                run.append(k)
                end = max(end, stop)
                continue
            for m in run:
                groups[m] = min(run)
            run, end = [k], stop
        for m in run:
            groups[m] = min(run)
        memo[:] = [ids, tuple(inputs), tuple(groups)]
        return memo[2]

    def _check(self) -> None:
        """One synchronisation: the first failed bounds check, as the CPU backend raises it."""
        flag = int(self._error.copy_to_host()[0])
        self.syncs += 1
        if flag:
            self._error.copy_to_device(np.zeros(1, np.int32))
            messages = [msg for _, msg in self.checks]
            raise IndexError(messages[min(flag, len(messages)) - 1])

    def describe(self) -> str:
        """Kernels (name, launch shape, source hash), externs and the buffer plan."""
        s = self.schedule
        lines = [f"CudaProgram: {len(s.items)} items ({len(s.kernels)} kernels, {len(s.externs)} "
                 f"externs), {len(self.inputs)} inputs, {len(s.outputs)} outputs"]
        launches = {launch.item: launch for launch in self.launches}
        for t, item in enumerate(s.items):
            if isinstance(item, Kernel):
                ks = launches[t].source
                lines.append(f"  [{t}] kernel {ks.function:<32} {ks.grid}x{ks.block} "
                             f"hash {ks.hash[:12]}")
            else:
                lines.append(f"  [{t}] extern {item.name} -> {item.node.type_str}")
        p = self.plan
        lines.append(f"buffer plan: {len(p.nodes)} intermediates in {len(p.blocks)} device "
                     f"blocks, {p.total_bytes} B")
        names = {n: f"input {k}" for k, n in enumerate(self.inputs)}
        lines.extend(assign_lines(self.assigns, names))
        return "\n".join(lines)


class _Run:
    """The launch loop of a CudaProgram for one kind of call: which inputs are small host arrays
    (staged) and which assigns write straight into their targets (``in_place``: value ->
    target, planned for how the call's inputs share memory).

    Every array a launch reads or writes is bound when the loop is made, except the inputs
    passed as device arrays, the outputs and the in-place values (the targets' arrays), which
    are looked up in the call's ``env``: slicing a Numba device array costs tens of
    microseconds, a launch about 30."""

    def __init__(self, program: CudaProgram, staged: tuple[bool, ...],
                 in_place: dict[Node, Node]):
        self.program = program
        self.in_place = in_place
        schedule = program.schedule
        self.static: dict[Node, Any] = dict(program._blocks)
        for value in in_place:
            self.static.pop(value, None)
        # the small host inputs: one host and one device array per dtype, bound slices of it
        self.staging: list[tuple[list[int], np.ndarray, np.ndarray | None, Any]] = []
        by_dtype: dict[str, list[int]] = {}
        for k, small in enumerate(staged):
            if small:
                by_dtype.setdefault(program.inputs[k].dtype, []).append(k)
        for dtype, slots in by_dtype.items():
            sizes = [program.inputs[k].size for k in slots]
            np_dtype = np.dtype("bool" if dtype == "bool" else dtype)
            host = np.zeros(max(1, sum(sizes)), np_dtype)
            device = device_empty(host.shape[0], dtype)
            at = 0
            for k, n in zip(slots, sizes):
                self.static[program.inputs[k]] = device[at:at + n]
                at += n
            self.staging.append((slots, host, None, device))
        self.dynamic_inputs = [(k, n) for k, n in enumerate(program.inputs) if not staged[k]]
        self.target_slots = {i: program.inputs.index(t) for i, t in program.targets.items()}
        env_nodes = set(self.static) | {n for _, n in self.dynamic_inputs}
        self.fresh = [n for n in dict.fromkeys(schedule.outputs)
                      if n not in env_nodes and n not in in_place]
        self.steps: list[Callable[[Env], None]] = []
        self.assigns: list[AssignDecision] = []   # how this loop writes each assign

    def kernel_step(self, launch: _Launch, error: Any) -> Callable[[Env], None]:
        ks, fn = launch.source, launch.fn
        # a row kernel's block is its tree's width; a grid-stride kernel takes any block
        block = ks.block if ks.rows else externs.threads(ks.block)
        configured = fn[externs.cap(ks.grid), block]
        static = self.static
        bound: list[Any] = []
        late: list[tuple[int, Node, int]] = []     # (argument, node, base) looked up per call
        for n, base in ks.operands:
            if n in static:
                bound.append(static[n] if not base else static[n][base:])
            else:
                late.append((len(bound), n, base))
                bound.append(None)
        if ks.checks:
            bound.append(error)
        if not late:
            return lambda env: configured(*bound)

        def step(env: Env) -> None:
            args = list(bound)
            for i, n, base in late:
                args[i] = env[n] if not base else env[n][base:]
            configured(*args)
        return step

    def extern_step(self, item: Extern, item_index: int) -> Callable[[Env], None]:
        node = item.node
        operands: list[tuple[Node, View, Any, Any]] = []   # (src, view, densify, dense buffer)
        for load in item.loads:
            plain = externs.is_plain(load.view, load.src.size)
            strided_ok = node.op == "matmul" and load.view.masks is None
            if plain or strided_ok:
                operands.append((load.src, load.view, None, None))
            else:
                size = math.prod(load.view.shape)
                operands.append((load.src, View.contiguous(load.view.shape),
                                 externs.ViewArgs(load.view, to_device),
                                 device_empty(size, load.src.dtype)))

        def read(env: Env, k: int) -> Any:
            src, _, args, dense = operands[k]
            if args is None:
                return env[src]
            args.densify(env[src], dense)
            return dense

        if node.op == "matmul":
            (_, a_view, _, _), (_, b_view, _, _) = operands

            def matmul(env: Env) -> None:
                externs.matmul(read(env, 0), a_view, read(env, 1), b_view, env[node], node.dtype)
            return matmul
        axis, shape = node.attrs[0], tuple(operands[1][1].shape)
        strides = View.contiguous(node.shape).strides
        src_shape = to_device(np.array(shape or (1,), np.int64))
        out_strides = to_device(np.array(strides or (1,), np.int64))
        size = math.prod(shape)

        bound = node.shape[axis]
        error, code = self.program._error, self.program._scatter_codes[item_index]

        def scatter(env: Env) -> None:
            externs.scatter_add(env[node], read(env, 0), read(env, 1), src_shape, out_strides,
                                axis, len(shape), size, bound, error, code)
        return scatter

    def _stage(self, inputs: list[Any]) -> None:
        """Copy the small host inputs to the device: one copy per dtype, none when no value
        changed since the last call (the copy waits for the kernels before it: the default
        stream runs in order)."""
        for i, (slots, host, sent, device) in enumerate(self.staging):
            at = 0
            for k in slots:
                a = inputs[k]
                host[at:at + a.size] = a.reshape(-1)
                at += a.size
            if sent is None or host.tobytes() != sent.tobytes():   # bits: -0.0, NaN
                device.copy_to_device(host)
                self.program.uploads += 1
                self.staging[i] = (slots, host, host.copy(), device)

    def __call__(self, inputs: list[Any]) -> list[Any]:
        program, schedule, targets = self.program, self.program.schedule, self.program.targets
        if self.staging:
            self._stage(inputs)
        env: Env = dict(self.static)
        for k, node in self.dynamic_inputs:
            a = inputs[k]
            if not is_device_array(a):
                a = to_device(a)
                program.uploads += 1
            env[node] = a
        for value, target in self.in_place.items():
            env[value] = env[target]
        for node in self.fresh:
            env[node] = device_empty(node.size, node.dtype)
        for step in self.steps:
            step(env)
        if program.checks:
            program._check()
        results = []
        taken: set[int] = set()
        for i, node in enumerate(schedule.outputs):
            if i in targets:
                results.append(None)
                continue
            array = env[node]
            if node in program.inputs or id(array) in taken:  # each result owns its array
                array = copy_array(array)
            taken.add(id(array))
            results.append(array)
        # assigns last: every item read the old values; a value that is itself an input (and
        # maybe written here too) is copied first
        values = {i: env[schedule.outputs[i]] for i in targets}
        staged = {i: copy_array(v) for i, v in values.items()
                  if any(v is env[t] for t in targets.values()) and v is not env[targets[i]]}
        for i, target in targets.items():
            dest, value = env[target], staged.get(i, values[i])
            if value is not dest and dest.shape[0]:
                externs.copy(value, dest)
            k = self.target_slots[i]
            if not is_device_array(inputs[k]):  # a host target: its array gets the value back
                dest.copy_to_host(inputs[k])
                program.syncs += 1
                results[i] = inputs[k]
            else:
                results[i] = dest
        return results


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Under the simulator, kernels are Python on numpy scalars: unsigned hash arithmetic that
    wraps (as it does on the GPU) and IEEE results (inf, nan) must not warn. The simulator runs
    each block's threads as Python threads, which do not share ``np.errstate``: the warnings
    filter (process-wide) silences them. The simulator's block manager polls its threads while
    holding the GIL: a short switch interval lets them run (2.5x faster tests, measured)."""
    if not simulator_enabled():
        yield
        return
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        sys.setswitchinterval(interval)


def compile_schedule(schedule: Schedule, targets: dict[int, Node] | None = None) -> CudaProgram:
    """Generate and load every kernel of ``schedule`` for the GPU (see ``CudaProgram``)."""
    return CudaProgram(schedule, targets or {})
