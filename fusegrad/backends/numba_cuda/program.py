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
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import CodegenError
from ...ir.device import copy_array, device_empty, is_device_array, simulator_enabled, to_device
from ...ir.node import Node
from ...ir.schedule import Extern, Kernel, Schedule
from ...ir.view import View
from ..numba_cpu.program import BufferPlan, plan_buffers
from . import externs
from .cache import load_kernel
from .render import CudaKernelSource, kernel_source

Env = dict[Node, Any]
SIMULATOR_SWITCH_INTERVAL = 0.0005   # seconds (Python's default: 0.005)


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
        self.checks = [(launch, msg) for launch in self.launches for msg in launch.source.checks]
        self._steps: list[Callable[[Env], None]] | None = None
        self._blocks: dict[Node, Any] = {}
        self._error: Any = None
        self.syncs = 0   # device synchronisations ``run`` made (tests count them)

    # ------------------------------------------------------------------ first run
    def _prepare(self) -> None:
        blocks = [device_empty(n, dt) for dt, n in self.plan.blocks]
        for node in self.plan.nodes:
            self._blocks[node] = blocks[self.plan.block_of[node]][:node.size]
        if self.checks:
            self._error = to_device(np.zeros(1, np.int32))
        launches = {launch.item: launch for launch in self.launches}
        self._steps = [self._kernel_step(launches[t]) if isinstance(item, Kernel)
                       else self._extern_step(item)
                       for t, item in enumerate(self.schedule.items)]

    def _kernel_step(self, launch: _Launch) -> Callable[[Env], None]:
        ks, fn = launch.source, launch.fn
        operands = ks.operands
        # a row kernel's block is its tree's width; a grid-stride kernel takes any block
        block = ks.block if ks.rows else externs.threads(ks.block)
        configured = fn[externs.cap(ks.grid), block]
        error = self._error

        def step(env: Env) -> None:
            args = [env[n] if not base else env[n][base:] for n, base in operands]
            if ks.checks:
                args.append(error)
            configured(*args)
        return step

    def _extern_step(self, item: Extern) -> Callable[[Env], None]:
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
                                 externs.ViewArgs(load.view, to_device), device_empty(size, load.src.dtype)))

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

        def scatter(env: Env) -> None:
            externs.scatter_add(env[node], read(env, 0), read(env, 1), src_shape, out_strides,
                                axis, len(shape), size)
        return scatter

    # ------------------------------------------------------------------ every run
    def run(self, inputs: list[Any]) -> list[Any]:
        """Run the schedule on the GPU.

        Args:
            inputs: one flat array per ``self.inputs`` entry: device arrays, or host arrays that
                are copied to the device for this call.

        Returns:
            A flat device array per ``schedule.outputs`` entry (an ``assign`` output is its
            target's array: the device array passed in, or the host one written back).
        """
        if self._steps is None:
            self._prepare()
        assert self._steps is not None
        with _quiet():
            return self._run(inputs)

    def _run(self, inputs: list[Any]) -> list[Any]:
        schedule = self.schedule
        on_device = [a if is_device_array(a) else to_device(a) for a in inputs]
        env: Env = dict(self._blocks)
        env.update(zip(self.inputs, on_device))
        fresh = [n for n in dict.fromkeys(schedule.outputs) if n not in env]
        for node in fresh:
            env[node] = device_empty(node.size, node.dtype)
        for step in self._steps:
            step(env)
        if self.checks:
            self._check()
        results = []
        taken: set[int] = set()
        for i, node in enumerate(schedule.outputs):
            if i in self.targets:
                results.append(None)
                continue
            array = env[node]
            if node in self.inputs or id(array) in taken:  # each result owns its array
                array = copy_array(array)
            taken.add(id(array))
            results.append(array)
        # assigns last: every item read the old values; a value that is itself an input (and
        # maybe written here too) is copied first
        values = {i: env[schedule.outputs[i]] for i in self.targets}
        staged = {i: copy_array(v) for i, v in values.items()
                  if any(v is env[t] for t in self.targets.values())}
        for i, target in self.targets.items():
            dest, value = env[target], staged.get(i, values[i])
            if value is not dest and dest.shape[0]:
                dest.copy_to_device(value)
            host = inputs[self.inputs.index(target)]
            if not is_device_array(host):  # a host target: its array gets the value back
                dest.copy_to_host(host)
                self.syncs += 1
                results[i] = host
            else:
                results[i] = dest
        return results

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
        return "\n".join(lines)


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
