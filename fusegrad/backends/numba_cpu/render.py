"""Numba source for one fused Kernel: its loop nest (backends/lowering) printed as an ``@njit``
module.

The function takes flat 1-D contiguous arrays (the nest's parameters); bounds and strides are
literals, so LLVM sees plain counted loops it can vectorise. A parallel loop becomes ``prange``
and the function is compiled with ``parallel=True``.

One kind of kernel takes its length as an argument instead: a single serial loop that reads
and writes every array at the loop position (or reads a scalar at a fixed one), with no
masks, random draws or checks. Such a kernel's code does not depend on its size, so an
optimizer's update of every parameter, or the same activation at two widths, is one compiled
function (one Numba compile, about 0.3 s, instead of one per size). Its name drops the size
(``k_add_mul_neg_256x784`` -> ``k_add_mul_neg_n``) and it takes ``n`` last.

The comment lines of the module (the IR nodes and the user's lines they came from) are not part
of the source hash: moving a line in the user's file does not recompile a kernel.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

from ...ir.dtypes import is_float
from ...ir.node import Node
from ...ir.random import SCALAR_SOURCE
from ...ir.schedule import Kernel
from ..lowering import LoopNest, lower
from ..lowering.jam import jam
from ..lowering.split import split
from ..lowering.through import read_through
from ..lowering.loopnest import (AccRef, Accumulate, Accumulator, Apply, Assign, AtLeast, Below,
                                 CheckIndex, Comment, Conjunction, Convert, Divisible, Flag,
                                 Index, Lit, Loop, Never, Read, Ref, Stmt, Store, Term, Uniform,
                                 Value, walk)
from .canonical import canonical, position
from .scalar_ops import EXP32_SOURCE, TANH32_SOURCE, TANH64_SOURCE, literal, op_expr


@dataclass(frozen=True)
class KernelSource:
    """Generated module text for one kernel.

    Attributes:
        name: the kernel's name in the Schedule.
        source: the module text, comments included.
        function: name of the ``@njit`` function in the module.
        hash: sha256 (hex) of the module's code lines, comments left out.
        parallel: whether the function was generated with ``prange`` and ``parallel=True``.
        operands: what the function takes, in call order, as (node, base): the kernel's outputs
            (base 0), then one entry per distinct (load source, ``load_base``) pair, in the order
            the code first reads them. The argument is the node's flat buffer from element
            ``base`` on (``buffer[base:]``).
    """

    name: str
    source: str
    function: str
    hash: str
    parallel: bool
    operands: tuple[tuple[Node, int], ...] = field(default=(), compare=False, repr=False)
    extent: int | None = field(default=None, compare=False)

    @property
    def arg_dtypes(self) -> tuple[str, ...]:
        """The function's argument types: the operands' dtypes, then ``intp`` for the length
        of a kernel that takes it (``extent``)."""
        dtypes = tuple(n.dtype for n, _ in self.operands)
        return dtypes + (LENGTH_DTYPE,) if self.extent is not None else dtypes


# The argument type of a kernel's length (``KernelSource.extent``) among its arrays' dtypes.
LENGTH_DTYPE = "intp"


def kernel_source(kernel: Kernel, parallel: bool) -> KernelSource:
    """Generate the Numba module for ``kernel``.

    Args:
        kernel: a Kernel of a Schedule (see ir/schedule.py for the contract).
        parallel: put ``prange`` on the outermost loop and compile with ``parallel=True``. Ignored
            when the kernel has no outer loop (a reduction to a single value).
    """
    return _source(kernel, *_lowered(kernel, parallel))


def update_sources(kernel: Kernel, parallel: bool, through: dict[Node, Node]
                   ) -> tuple[KernelSource, KernelSource]:
    """The module of an update in place, ``kernel`` reading each input node of ``through``
    through the argument of the output node it maps to (``lowering.through``; run only with
    that output being the input's memory), and the plain module (``kernel_source``), from one
    lowering. For inputs read only at the element the kernel writes."""
    nest, extent = _lowered(kernel, parallel)
    return _source(kernel, read_through(nest, through), extent), _source(kernel, nest, extent)


def _lowered(kernel: Kernel, parallel: bool) -> tuple[LoopNest, int | None]:
    """``kernel``'s loop nest as rendered, and its length if it takes it (``size_free_extent``)."""
    nest = jam(lower(kernel, parallel, cpu=True))
    extent = size_free_extent(nest)
    if extent is not None:
        nest = canonical(replace(nest, function=re.sub(r"(_\d+(x\d+)*)?$", "_n",
                                                       nest.function, count=1)))
    else:
        nest = split(nest)
    return nest, extent


def _source(kernel: Kernel, nest: LoopNest, extent: int | None) -> KernelSource:
    source = render_module(nest, sized=extent is not None)
    return KernelSource(kernel.name, source, nest.function, source_hash(source), nest.parallel,
                        tuple((p.node, p.base) for p in nest.params), extent)


def size_free_extent(nest: LoopNest) -> int | None:
    """The length of ``nest``'s one loop if its code can take it as an argument: one serial
    loop over every element, every read and write at the loop position (or a read at a fixed
    element), no masks, random draws, reductions or checks; else None."""
    loops = [s for s in nest.body if isinstance(s, Loop)]
    if nest.random or nest.prelude or len(loops) != 1 or loops[0].parallel or loops[0].hoisted:
        return None
    loop = loops[0]
    at_loop = position(loop.var)
    for stmt in nest.body:   # the values read once, before the loop
        if stmt is not loop and not (isinstance(stmt, Comment) or (
                isinstance(stmt, Assign) and _size_free(stmt.value, at_loop))):
            return None
    for stmt in loop.body:
        if isinstance(stmt, Comment):
            continue
        if isinstance(stmt, Store):
            if stmt.index != at_loop or not _size_free(stmt.value, at_loop):
                return None
        elif not isinstance(stmt, Assign) or not _size_free(stmt.value, at_loop):
            return None
    return loop.extent


def _size_free(v: Value, at_loop: Index) -> bool:
    """Whether the code of ``v`` is the same whatever the loop's length."""
    if isinstance(v, (Ref, Lit)):
        return True
    if isinstance(v, Read):
        return not v.conds and (v.index == at_loop or not v.index.terms)
    if isinstance(v, Convert):
        return _size_free(v.value, at_loop)
    if isinstance(v, Apply):
        return all(_size_free(a, at_loop) for a in v.args)
    return False


def code_lines(source: str) -> str:
    """The source without its comment lines: what the hash and the cache check compare."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


def source_hash(source: str) -> str:
    """sha256 (hex) of the source's code lines."""
    return hashlib.sha256(code_lines(source).encode()).hexdigest()


def render_module(nest: LoopNest, sized: bool = False) -> str:
    """The module text of ``nest``: imports, the helpers it calls, the IR listing as comments and
    the ``@njit`` function (``sized``: its one loop runs over ``range(n)``, ``n`` its last
    argument; see ``size_free_extent``)."""
    lines: list[str] = []
    _block(nest.prelude + nest.body, 1, lines, sized)
    parts = ["# Generated by fusegrad.backends.numba_cpu.render from the IR listed below.",
             "import math",
             "import numpy as np",
             "from numba import njit" + (", prange" if nest.parallel else ""),
             "", ""]
    steps = _float_reductions(nest)
    if steps:
        parts[-2:-2] = [f"from fusegrad.backends.numba_cpu.intrinsics import {', '.join(steps)}"]
    for used, helper in ((nest.random, SCALAR_SOURCE), (_uses(nest, "tanh"), TANH32_SOURCE),
                         (_uses(nest, "tanh", "float64"), TANH64_SOURCE),
                         (_uses(nest, "exp"), EXP32_SOURCE)):
        if used:
            parts.extend([helper.strip("\n"), "", ""])
    parts.extend(f"# {line}" for line in nest.listing)
    parts.append(f'@njit(cache=True, error_model="numpy", parallel={nest.parallel})')
    params = [p.name for p in nest.params] + (["n"] if sized else [])
    parts.append(f"def {nest.function}({', '.join(params)}):")
    parts.extend(lines if lines else ["    pass"])
    return "\n".join(parts) + "\n"


def _float_reductions(nest: LoopNest) -> list[str]:
    """The reduction-step intrinsics the nest's float sums and maxima call."""
    kinds = {(s.kind, s.dtype) for s in walk(nest.body)
             if isinstance(s, Accumulate) and is_float(s.dtype)}
    return [f"{kind}_step" for kind in ("max", "sum")
            if (kind, "float32") in kinds or (kind == "max" and (kind, "float64") in kinds)]


def _uses(nest: LoopNest, op: str, dtype: str = "float32") -> bool:
    """Whether some value of the nest is an ``op`` of ``dtype`` (whose helper ``op_expr``
    calls)."""
    return any(isinstance(s, Assign) and isinstance(s.value, Apply)
               and s.value.node.op == op and s.value.node.dtype == dtype
               for s in walk(nest.body))


def _block(stmts: list[Stmt], depth: int, out: list[str], sized: bool = False) -> None:
    """The lines of ``stmts`` at ``depth`` (``sized``: an outermost loop runs to ``n``)."""
    pad = "    " * depth
    for s in stmts:
        if isinstance(s, Loop) and s.extent - s.start == 1 and not s.parallel and not sized:
            # one iteration (a split loop's segment, an im2col tap): no loop for Numba to build
            out.append(f"{pad}{s.var} = {s.start}")
            _block(list(s.hoisted) + s.body, depth, out)
        elif isinstance(s, Loop):
            rng = "prange" if s.parallel else "range"
            bounds = "n" if sized else f"{s.start}, {s.extent}" if s.start else str(s.extent)
            out.append(f"{pad}for {s.var} in {rng}({bounds}):")
            _block(list(s.hoisted) + s.body, depth + 1, out)
        else:
            out.extend(pad + line for line in _statement(s))


def _statement(s: Stmt) -> list[str]:
    if isinstance(s, Assign):
        return [f"{s.name} = {_value(s.value)}"]
    if isinstance(s, Store):
        return [f"{s.array}[{_index(s.index)}] = {_value(s.value)}"]
    if isinstance(s, Comment):
        return [f"# {s.text}"]
    if isinstance(s, Accumulator):
        init = literal(s.init, s.dtype)
        if s.count is None:
            return [f"{s.name} = {init}"]
        np_type = "np.bool_" if s.dtype == "bool" else f"np.{s.dtype}"
        return [f"{s.name} = np.full({s.count}, {init}, {np_type})"]
    if isinstance(s, Accumulate):
        return _accumulate(s)
    if isinstance(s, CheckIndex):
        v = _value(s.value)
        return [f"if {v} < 0 or {v} >= {s.size}:", f"    raise IndexError({s.message!r})"]
    raise TypeError(f"no Numba code for statement {s!r}")


def _accumulate(s: Accumulate) -> list[str]:
    acc, x, dt = _value(s.acc), _value(s.value), s.dtype
    float_input = is_float(dt)
    if s.kind == "sum":
        if dt == "bool":
            return [f"{acc} = {acc} | {x}"]
        if dt == "float32":  # into a float64: the order shows in float32 only on cancellation
            return [f"{acc} = sum_step({acc}, {x})"]
        return [f"{acc} += {x}"] if float_input else [f"{acc} = np.{dt}({acc} + {x})"]
    if s.kind == "max":
        if float_input:  # once NaN, stays NaN: numpy's max propagates it
            return [f"{acc} = max_step({acc}, {x})"]
        return [f"if {x} > {acc}:", f"    {acc} = {x}"]
    if s.kind == "argmax":
        assert s.best is not None and s.position is not None
        best = s.best
        # the first NaN wins, like np.argmax
        test = f"{x} > {best} or ({x} != {x} and {best} == {best})" if float_input \
            else f"{x} > {best}"
        return [f"if {test}:", f"    {best} = {x}", f"    {acc} = {_index(s.position)}"]
    raise TypeError(f"no Numba code for a reduction of kind {s.kind!r}")


def _value(v: Value) -> str:
    if isinstance(v, Ref):
        return v.name
    if isinstance(v, Lit):
        return literal(v.value, v.dtype)
    if isinstance(v, Index):
        return _index(v)
    if isinstance(v, Read):
        at = f"{v.array}[{_index(v.index)}]"
        if not v.conds:
            return at
        return f"{at} if {' and '.join(_cond(c) for c in v.conds)} else {literal(0, v.dtype)}"
    if isinstance(v, AccRef):
        return v.name if v.index is None else f"{v.name}[{_index(v.index)}]"
    if isinstance(v, Convert):
        return f"np.{v.dtype}({_value(v.value)})"
    if isinstance(v, Apply):
        return op_expr(v.node, [_value(a) for a in v.args])
    if isinstance(v, Uniform):
        fn = "_fg_uniform32" if v.dtype == "float32" else "_fg_uniform64"
        return f"{fn}({v.seed.name}, {v.counter.name} + {_index(v.index)})"
    if isinstance(v, Conjunction):
        return " and ".join(_cond(c) for c in v.conds)
    raise TypeError(f"no Numba code for value {v!r}")


def _position(var: Value, start: int, step: int) -> str:
    """``(var - start) // step``: which kept element a masked position stands for."""
    k = _value(var)
    if start:
        k = f"({k} - {start})"
    return f"({k} // {step})" if step != 1 else k


def _term(t: Term) -> str:
    k = _position(t.var, t.start, t.step)
    return f"{k} * {t.stride}" if t.stride != 1 else k


def _index(ix: Index) -> str:
    terms = ([str(ix.offset)] if ix.offset else []) + [_term(t) for t in ix.terms]
    return " + ".join(terms) or "0"


def _cond(c: Divisible | AtLeast | Below | Never | Flag) -> str:
    if isinstance(c, Flag):
        return c.name
    if isinstance(c, Never):
        return "False"
    if isinstance(c, Divisible):
        return f"{_position(c.var, c.start, 1)} % {c.step} == 0"
    if isinstance(c, AtLeast):
        return f"{_value(c.var)} >= {c.start}"
    return f"{_position(c.var, c.start, c.step)} < {c.count}"
