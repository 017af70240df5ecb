"""CUDA source for one fused Kernel: its loop nest (backends/lowering, the same nest the CPU
renderer prints) printed as a ``@cuda.jit`` module.

The nest is lowered with its outermost kept loop parallel, and mapped onto the GPU by shape:

- **elementwise** (no accumulator): the kept loops (every loop here) run as one flat grid-stride
  range over threads, each position recovering its loop variables (a 2x100000 nest that does
  not merge still spreads over every thread). A kernel without loops runs in thread 0.
- **rows** (a reduction): the kept loops run as one flat grid-stride range over *blocks*, one
  block per output row. Inside a row, each loop of the row body (the reduction stages and the full-shape
  epilogue) is split across the block's threads (``range(tid, extent, BLOCK)``); after a
  reduction loop, each accumulator is combined through shared memory by a tree reduction, and
  every thread reads the result. Values stored once per row are written by thread 0. Rows of
  at most ``SHORT_ROW`` elements get a block of one warp (32 threads), longer ones 256. A
  reduction to a single value is one block.

Everything else (index arithmetic, masks, hoisted flags, the counter-based random numbers) is
printed as the CPU renderer prints it, so both backends compute the same values; sums are
added in another order (per thread, then the tree), which is the one difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import CodegenError
from ...ir.dtypes import is_float
from ...ir.node import Node
from ...ir.random import SCALAR_SOURCE
from ...ir.schedule import Kernel
from ..lowering import LoopNest, lower
from ..lowering.loopnest import (AccRef, Accumulate, Accumulator, Apply, Assign, CheckIndex,
                                 Comment, Conjunction, Convert, Index, Lit, Loop, Read, Ref, Stmt,
                                 Store, Uniform, Value, walk)
from ..numba_cpu import render as cpu
from ..numba_cpu.scalar_ops import literal
from .scalar_ops import TANH32_DEVICE_SOURCE, op_expr

BLOCK_LONG = 256        # threads per block for long rows and elementwise kernels
BLOCK_SHORT = 32        # one warp: rows of at most SHORT_ROW elements
SHORT_ROW = 64
MAX_BLOCKS = 4096       # grid-stride loops cover the rest

# the counter-based generator's helpers, compiled as CUDA device functions: the same uint64
# arithmetic as on the CPU, so dropout masks are bit-identical
UNIFORM_DEVICE_SOURCE = SCALAR_SOURCE.replace('@njit(cache=True, inline="always")',
                                              "@cuda.jit(device=True)")
assert UNIFORM_DEVICE_SOURCE != SCALAR_SOURCE, "ir/random.py's helper decorator changed"

_NUMBA_TYPES = {"float32": "numba.float32", "float64": "numba.float64", "int32": "numba.int32",
                "int64": "numba.int64", "bool": "numba.boolean"}


@dataclass(frozen=True)
class CudaKernelSource:
    """Generated module text for one kernel, and how to launch it.

    Attributes:
        name: the kernel's name in the Schedule.
        source: the module text, comments included.
        function: name of the ``@cuda.jit`` function in the module.
        hash: sha256 (hex) of the module's code lines.
        grid: blocks to launch.
        block: threads per block.
        rows: one block per row (the block's width is the tree reduction's): the block must
            be launched as is; grid-stride kernels take any block.
        checks: messages of the gather bounds checks; the kernel then takes a last argument,
            an int32 error flag it sets to ``k + 1`` when check ``k`` fails.
        operands: (node, base) per argument, as ``numba_cpu.render.KernelSource.operands``.
    """

    name: str
    source: str
    function: str
    hash: str
    grid: int
    block: int
    rows: bool
    checks: tuple[str, ...] = ()
    operands: tuple[tuple[Node, int], ...] = field(default=(), compare=False, repr=False)


def kernel_source(kernel: Kernel) -> CudaKernelSource:
    """Generate the CUDA module for ``kernel`` (see the module docstring for the mapping)."""
    nest = lower(kernel, parallel=True)
    printer = _Printer(nest)
    source = printer.module()
    return CudaKernelSource(kernel.name, source, nest.function, cpu.source_hash(source),
                            printer.grid, printer.block, printer.rows is not None,
                            tuple(printer.checks),
                            tuple((p.node, p.base) for p in nest.params))


def _row_body(stmts: list[Stmt]) -> list[Stmt] | None:
    """The statement list that declares the accumulators (one output row's work), if any."""
    if any(isinstance(s, Accumulator) for s in stmts):
        return stmts
    for s in stmts:
        if isinstance(s, Loop):
            found = _row_body(s.body)
            if found is not None:
                return found
    return None


class _Printer:
    """Prints one nest; records the launch shape and the bounds checks it met."""

    def __init__(self, nest: LoopNest):
        self.nest = nest
        self.rows = _row_body(nest.body)
        self.checks: list[str] = []
        self.shared: dict[str, str] = {}   # shared array name -> dtype
        self.acc_dtype: dict[str, str] = {}
        self.grid, self.block = 1, BLOCK_LONG
        top = next((s for s in nest.body if isinstance(s, Loop)), None)
        # the kept loops, run as one flat range (threads, or blocks of rows)
        extent = math.prod(loop.extent for loop in self._kept_chain(top)) if top else 1
        if self.rows is None:
            # small kernels get a small block (whole warps): no idle threads to start
            self.block = min(BLOCK_LONG, BLOCK_SHORT * max(1, -(-extent // BLOCK_SHORT)))
            self.grid = max(1, min(MAX_BLOCKS, -(-extent // self.block)))
        else:
            row_loops = [s.extent for s in self.rows if isinstance(s, Loop)]
            self.block = BLOCK_SHORT if max(row_loops, default=0) <= SHORT_ROW else BLOCK_LONG
            self.grid = max(1, min(MAX_BLOCKS, extent))

    def _kept_chain(self, loop: Loop | None) -> list[Loop]:
        """``loop`` and the loops nested in it alone (every kept loop: their iterations are
        independent), down to the one holding a row body or the elementwise work."""
        if loop is None or self.rows is self.nest.body:
            return []
        chain = [loop]
        while (len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop)
               and chain[-1].body is not self.rows):
            chain.append(chain[-1].body[0])
        if any(c.extent == 0 for c in chain):
            return [loop]   # nothing to run: the loops stay as they are
        return chain

    def _flat_loops(self, loop: Loop, start: str, step: str, depth: int, out: list[str]) -> None:
        """The kept loops from ``loop`` down as one range striding from ``start`` by ``step``
        (threads or blocks): each position recovers its loop variables, then every loop's
        hoisted flags, then the innermost body."""
        pad = "    " * depth
        chain = self._kept_chain(loop)
        if len(chain) == 1:
            out.append(f"{pad}for {loop.var} in range({start}, {loop.extent}, {step}):")
        else:
            inner = math.prod(c.extent for c in chain)
            out.append(f"{pad}for _fg_i in range({start}, {inner}, {step}):")
            for j, c in enumerate(chain):
                inner //= c.extent
                expr = f"_fg_i // {inner}" if inner > 1 else "_fg_i"
                out.append(f"{pad}    {c.var} = {expr if j == 0 else f'({expr}) % {c.extent}'}")
        for c in chain:
            self._block(list(c.hoisted), depth + 1, out)
        self._block(chain[-1].body, depth + 1, out)   # the list itself: it may be the row body

    # ------------------------------------------------------------------ module
    def module(self) -> str:
        nest = self.nest
        lines: list[str] = []
        if self.rows is None:
            self._elementwise(nest.prelude + nest.body, lines)
        else:
            self._block(nest.prelude, 1, lines)
            self._block(nest.body, 1, lines)
        params = [p.name for p in nest.params] + (["_fg_err"] if self.checks else [])
        head = ["    _fg_tid = cuda.threadIdx.x"] if self.rows is not None else []
        head += [f"    sh_{name} = cuda.shared.array({self.block}, {_NUMBA_TYPES[dt]})"
                 for name, dt in self.shared.items()]
        parts = ["# Generated by fusegrad.backends.numba_cuda.render from the IR listed below.",
                 "import math", "import numba", "import numpy as np", "from numba import cuda",
                 "",
                 "# numba-cuda keeps compiled code beside a module imported from a file",
                 'CACHE = "__file__" in globals()',
                 "", ""]
        helpers = ((nest.random, UNIFORM_DEVICE_SOURCE), (_uses_tanh32(nest), TANH32_DEVICE_SOURCE))
        for used, helper in helpers:
            if used:
                parts.extend([helper.strip("\n"), "", ""])
        parts.extend(f"# {line}" for line in nest.listing)
        parts.append(f"# launch: {self.grid} blocks of {self.block} threads "
                     f"({'one block per row' if self.rows is not None else 'grid-stride'})")
        parts.append("@cuda.jit(cache=CACHE)")
        parts.append(f"def {nest.function}({', '.join(params)}):")
        parts.extend(head + lines if head + lines else ["    pass"])
        return "\n".join(parts) + "\n"

    # ------------------------------------------------------------------ elementwise kernels
    def _elementwise(self, stmts: list[Stmt], out: list[str]) -> None:
        if not any(isinstance(s, Loop) for s in stmts):
            out.append("    if cuda.grid(1) == 0:")
            self._block(stmts, 2, out)
            return
        for s in stmts:
            if isinstance(s, Loop):
                self._flat_loops(s, "cuda.grid(1)", "cuda.gridsize(1)", 1, out)
            else:
                self._block([s], 1, out)

    # ------------------------------------------------------------------ statements
    def _block(self, stmts: list[Stmt], depth: int, out: list[str]) -> None:
        pad = "    " * depth
        in_row = stmts is self.rows
        for s in stmts:
            if isinstance(s, Loop) and s.parallel and self.rows is not None and not in_row:
                self._flat_loops(s, "cuda.blockIdx.x", "cuda.gridDim.x", depth, out)
            elif isinstance(s, Loop):
                rng = f"range(_fg_tid, {s.extent}, {self.block})" if in_row else \
                    f"range({s.extent})"
                out.append(f"{pad}for {s.var} in {rng}:")
                self._block(list(s.hoisted), depth + 1, out)
                self._block(s.body, depth + 1, out)   # the list itself: it may be the row body
                if in_row:
                    self._combine(s, pad, out)
            elif isinstance(s, Store) and in_row:
                out.append(f"{pad}if _fg_tid == 0:")
                out.append(f"{pad}    {s.array}[{cpu._index(s.index)}] = {_value(s.value)}")
            else:
                out.extend(pad + line for line in self._statement(s))

    def _statement(self, s: Stmt) -> list[str]:
        if isinstance(s, Assign):
            return [f"{s.name} = {_value(s.value)}"]
        if isinstance(s, Store):
            return [f"{s.array}[{cpu._index(s.index)}] = {_value(s.value)}"]
        if isinstance(s, Comment):
            return [f"# {s.text}"]
        if isinstance(s, Accumulator):
            if s.count is not None:
                raise CodegenError(f"{self.nest.kernel}: an array of accumulators (reduced loops "
                                   "outermost) has no CUDA mapping")
            self.acc_dtype[s.name] = s.dtype
            return [f"{s.name} = {literal(s.init, s.dtype)}"]
        if isinstance(s, Accumulate):
            return _accumulate(s)
        if isinstance(s, CheckIndex):
            self.checks.append(s.message)
            v = _value(s.value)
            lines = [f"if {v} < 0 or {v} >= {s.size}:", f"    _fg_err[0] = {len(self.checks)}"]
            if isinstance(s.value, Ref):  # read element 0 instead of outside the array
                lines.append(f"    {v} = 0")
            return lines
        raise CodegenError(f"no CUDA code for statement {s!r}")

    # ------------------------------------------------------------------ tree reductions
    def _combine(self, loop: Loop, pad: str, out: list[str]) -> None:
        """After a thread-split reduction loop: every accumulator it updates, combined across
        the block through shared memory; each thread then holds the row's value."""
        for s in walk(loop.body):
            if not isinstance(s, Accumulate):
                continue
            acc = s.acc.name
            if s.kind == "argmax":
                assert s.best is not None
                self._tree(pad, out, [(s.best, self.acc_dtype[s.best]), (acc, "int64")],
                           _argmax_step(s.best, acc, is_float(s.dtype)))
            else:
                dt = self.acc_dtype[acc]
                self._tree(pad, out, [(acc, dt)], _pair_step(s.kind, acc, dt))

    def _tree(self, pad: str, out: list[str], values: list[tuple[str, str]],
              step: list[str]) -> None:
        for name, dt in values:
            self.shared[name] = dt
            out.append(f"{pad}sh_{name}[_fg_tid] = {name}")
        out.append(f"{pad}cuda.syncthreads()")
        out.append(f"{pad}_fg_s = {self.block // 2}")
        out.append(f"{pad}while _fg_s > 0:")
        out.append(f"{pad}    if _fg_tid < _fg_s:")
        out.extend(f"{pad}        {line}" for line in step)
        out.append(f"{pad}    cuda.syncthreads()")
        out.append(f"{pad}    _fg_s //= 2")
        for name, _ in values:
            out.append(f"{pad}{name} = sh_{name}[0]")
        out.append(f"{pad}cuda.syncthreads()")


def _pair_step(kind: str, acc: str, dtype: str) -> list[str]:
    """One tree step: slot ``_fg_tid`` takes in slot ``_fg_tid + _fg_s``."""
    mine, other = f"sh_{acc}[_fg_tid]", f"sh_{acc}[_fg_tid + _fg_s]"
    if kind == "sum":
        if dtype == "bool":
            return [f"{mine} = {mine} | {other}"]
        return [f"{mine} = {mine} + {other}"] if is_float(dtype) else \
            [f"{mine} = np.{dtype}({mine} + {other})"]
    if kind == "max":
        test = "_fg_b > _fg_a or _fg_b != _fg_b" if is_float(dtype) else "_fg_b > _fg_a"
        return [f"_fg_a = {mine}", f"_fg_b = {other}", f"if {test}:", f"    {mine} = _fg_b"]
    raise CodegenError(f"no CUDA tree step for a reduction of kind {kind!r}")


def _argmax_step(best: str, acc: str, float_input: bool) -> list[str]:
    """Take the other slot's (value, position) when it comes first in ``np.argmax``'s order:
    the first NaN, else the larger value, the smaller position on a tie."""
    lines = [f"_fg_a = sh_{best}[_fg_tid]", f"_fg_b = sh_{best}[_fg_tid + _fg_s]",
             f"_fg_p = sh_{acc}[_fg_tid]", f"_fg_q = sh_{acc}[_fg_tid + _fg_s]"]
    later = "_fg_q < _fg_p"
    if float_input:
        lines.append(f"_fg_take = (_fg_a == _fg_a and (_fg_b != _fg_b or _fg_b > _fg_a or "
                     f"(_fg_b == _fg_a and {later}))) or (_fg_a != _fg_a and _fg_b != _fg_b "
                     f"and {later})")
    else:
        lines.append(f"_fg_take = _fg_b > _fg_a or (_fg_b == _fg_a and {later})")
    lines += ["if _fg_take:", f"    sh_{best}[_fg_tid] = _fg_b", f"    sh_{acc}[_fg_tid] = _fg_q"]
    return lines


def _accumulate(s: Accumulate) -> list[str]:
    """One thread's reduction step: the CPU renderer's, whose values print through ``_value``."""
    acc, x, dt = _value(s.acc), _value(s.value), s.dtype
    if s.kind == "sum":
        if dt == "bool":
            return [f"{acc} = {acc} | {x}"]
        return [f"{acc} += {x}"] if is_float(dt) else [f"{acc} = np.{dt}({acc} + {x})"]
    if s.kind == "max":
        test = f"{x} > {acc} or {x} != {x}" if is_float(dt) else f"{x} > {acc}"
        return [f"if {test}:", f"    {acc} = {x}"]
    if s.kind == "argmax":
        assert s.best is not None and s.position is not None
        best = s.best
        test = f"{x} > {best} or ({x} != {x} and {best} == {best})" if is_float(dt) \
            else f"{x} > {best}"
        return [f"if {test}:", f"    {best} = {x}", f"    {acc} = {cpu._index(s.position)}"]
    raise CodegenError(f"no CUDA code for a reduction of kind {s.kind!r}")


def _value(v: Value) -> str:
    """A value's expression: the CPU renderer's, with CUDA math for ``Apply``."""
    if isinstance(v, Apply):
        return op_expr(v.node, [_value(a) for a in v.args])
    if isinstance(v, Read):
        at = f"{v.array}[{cpu._index(v.index)}]"
        if not v.conds:
            return at
        return f"{at} if {' and '.join(cpu._cond(c) for c in v.conds)} else {literal(0, v.dtype)}"
    if isinstance(v, Convert):
        return f"np.{v.dtype}({_value(v.value)})"
    if isinstance(v, (Ref, Lit, Index, AccRef, Uniform, Conjunction)):
        return cpu._value(v)
    raise CodegenError(f"no CUDA code for value {v!r}")


def _uses_tanh32(nest: LoopNest) -> bool:
    return any(isinstance(s, Assign) and isinstance(s.value, Apply)
               and s.value.node.op == "tanh" and s.value.node.dtype == "float32"
               for s in walk(nest.body + nest.prelude))
