"""Lowering: one fused Kernel (ir/schedule.py) to a LoopNest (loopnest.py).

Decides the loop nest (which dims share a loop, whether reduced loops go outside the kept ones,
which loop is parallel), the reduction stages and their accumulators, every load's index and
mask conditions (hoisted to the loop they depend on), and the order of operands and arguments.
A kernel's outputs come first among the function's parameters, then one input per distinct
(loaded buffer, base offset) pair. A load's constant flat offset is taken out of the code: the
program passes the buffer from that offset on (``buf[base:]``, see ``load_base``), so kernels that
differ only in where they read (the time steps of an unrolled RNN) lower to the same nest.
Operands of commutative ops and the arguments are put in a canonical order (by what they
compute), so the same computation written another way lowers the same way too.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from ...ir.dtypes import is_float, is_int
from ...ir.errors import FusegradError
from ...ir.key import StructuralKeys
from ...ir.node import Node
from ...ir.ops import ELEMENTWISE, REDUCE
from ...ir.optable import is_commutative
from ...ir.schedule import Kernel, Load
from ...ir.view import View
from .hoist import OpenLoop, hoist
from .loopnest import (AccRef, Accumulate, Accumulator, Apply, Assign, AtLeast, Below,
                       CheckIndex, Comment, Cond, Convert, Divisible, Index, Lit, Loop, LoopNest,
                       Never, Param, Read, Ref, Stmt, Store, Term, Uniform, Value)
from .merge import Access, LoopAxis, group_dims


class LoweringError(FusegradError):
    """A Kernel does not follow the Schedule contract (ir/schedule.py)."""


def lower(kernel: Kernel, parallel: bool, cpu: bool = False) -> LoopNest:
    """The loop nest of ``kernel``.

    Args:
        kernel: a Kernel of a Schedule (see ir/schedule.py for the contract).
        parallel: make the outermost loop parallel. Ignored when the kernel has no outer loop
            (a reduction to a single value) or its reduced loops go outermost.
        cpu: shape the nest for one CPU core's caches and branch predictor: an elementwise
            kernel that reads memory transposed walks it in tiles (``_Lowerer.tiled_loops``),
            and a reduction's full-shape outputs are stored before the reductions, which read
            them back (``_Lowerer.stored_first``). A GPU renderer maps loops to threads and
            leaves both off.

    Raises:
        LoweringError: the kernel breaks the Schedule contract.
    """
    return _Lowerer(kernel, parallel, cpu).nest()


TILE = 16  # elements of the source's contiguous axis a transposing kernel reads in a row


def load_base(load: Load) -> int:
    """Element of ``load.src`` that the kernel's argument for this load starts at.

    The smallest flat offset the view reads at a valid (unmasked) position, so the offset left in
    the kernel (``view.offset - base``) depends only on the view's shape, strides and masks.
    0 (the offset stays in the index) when the view reads no valid position at all (an empty or
    fully masked view, whose offset may lie outside the buffer) or would read outside
    ``load.src``: every index the kernel computes then stays what it was.
    """
    view = load.view
    lo = hi = view.offset
    for d, (n, stride) in enumerate(zip(view.shape, view.strides)):
        m = view.mask(d)
        if m is not None:
            start, step, count = m
            n = min(count, len(range(start, n, step)))  # valid positions k = 0 .. n-1
        if n <= 0:
            return 0
        span = (n - 1) * stride
        lo, hi = (lo + span, hi) if span < 0 else (lo, hi + span)
    if lo <= 0 or hi >= load.src.size:
        return 0
    return lo


def kernel_work(kernel: Kernel) -> int:
    """Innermost-loop iterations of one call: one pass over ``shape`` per reduction stage and epilogue."""
    passes = sum(1 for n in kernel.body if n.op in REDUCE)
    if not kernel.reduce_axes or any(kernel.level(o) == "full" for o in kernel.outputs):
        passes += 1
    return math.prod(kernel.shape) * max(passes, 1)


def post_order(root: Node, children: Callable[[Node], Sequence[Node]],
               done: Callable[[Node], bool]) -> list[Node]:
    """The nodes under ``root`` (itself included) that are not ``done``, each after its
    ``children``, in the order a recursive depth-first walk would reach them, without recursing:
    kernels hold chains thousands of nodes deep."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen or done(node):
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(children(node)) if c not in seen)
    return order


def accumulator_dtype(r: Node) -> str:
    """The dtype a reduction accumulates in: float32 sums add in float64 and round once at the
    end. Adding float32 values one after another in float32 lost 3e-5 relative on 1M uniform
    values and 2e-2 on a sum of squares over 16M; in float64 the result is the float32 nearest
    the exact sum (3e-8) up to 16M. Cost, measured on the CPU: 10% on a 1M sum, 18% on a
    layernorm over 4096x256 rows, 25% on a 4096x256 column sum; nothing on a 64x256 column sum,
    a softmax or the MLP step."""
    return "float64" if r.op == "sum" and r.dtype == "float32" else r.dtype


def lowest(dtype: str) -> float | bool:
    """The value every other value of ``dtype`` is at least: where a max starts."""
    if is_float(dtype):
        return -math.inf
    if is_int(dtype):
        return -(2 ** (8 * (4 if dtype == "int32" else 8) - 1))
    return False


def function_name(kernel_name: str) -> str:
    """The function name of a kernel: ``k_`` and its name without a position prefix (``k3_``), so
    the same kernel at another place in another schedule has the same code (and cache entry). The
    prefix also keeps it clear of every other name in the kernel (arguments, locals)."""
    ident = re.sub(r"\W", "_", re.sub(r"^k\d*_", "", kernel_name))
    return f"k_{ident}"


def flat_index(offset: int, axes: list[tuple[Value, int, int, tuple[int, int, int] | None]]
               ) -> tuple[Index, list[Cond]]:
    """Flat offset and validity conditions of reading at ``offset`` plus, per axis
    ``(index, extent, stride, mask)``, the index's position; a mask ``(start, step, count)``
    keeps positions ``start + k * step`` for ``k < count``, which stand for element ``k``."""
    terms: list[Term] = []
    conds: list[Cond] = []
    for var, extent, stride, m in axes:
        if m is not None:
            start, step, count = m
            if count == 0:
                conds.append(Never())
                continue
            if step != 1:
                conds.append(Divisible(var, start, step))
            if start:
                conds.append(AtLeast(var, start))
            conds.append(Below(var, start, step, count))
            if stride:
                terms.append(Term(var, stride, start, step))
        elif stride and extent != 1:
            terms.append(Term(var, stride))
    return Index(offset, tuple(terms)), conds


class _Lowerer:
    """Builds the LoopNest of one kernel; see ``lower``."""

    def __init__(self, kernel: Kernel, parallel: bool, cpu: bool = False):
        self.k = kernel
        self.cpu = cpu
        self.notes: list[str] = []
        self.shape = kernel.shape
        self.reduced = set(kernel.reduce_axes)
        self.body = set(kernel.body)
        # per load: the (source, base) argument it reads and its view relative to that base. The
        # arguments are named in the order the code first reads them (``arg``), so kernels that
        # compute the same thing from loads listed in another order still lower the same.
        self.load_operand: dict[Node, tuple[Node, int]] = {}
        self.views: dict[Node, View] = {}
        for key, load in kernel.loads.items():
            base = load_base(load)
            self.load_operand[key] = (load.src, base)
            v = load.view
            self.views[key] = View(v.shape, v.strides, v.offset - base, v.masks) if base else v
        self.in_names: dict[tuple[Node, int], str] = {}
        self.sigs = StructuralKeys(self._stand_in)
        # outputs in a canonical order, for the same reason (ties keep the schedule's order)
        self.outputs = sorted(kernel.outputs, key=self.sig)
        self.arg_names = {n: f"out{i}" for i, n in enumerate(self.outputs)}
        self.top: list[Stmt] = []
        self.blocks: list[list[Stmt]] = [self.top]  # where statements go: the innermost last
        self.loops: list[OpenLoop] = []             # the loops open where statements go
        self.n_vars = 0
        self.kept: dict[Node, Value] = {}  # values at the outer level: accumulators, kept nodes
        self.rand_keys: dict[Node, tuple[Ref, Ref]] = {}
        self.ids: dict[Node, int] = {}
        self.accesses: list[Access] = []
        self.prelude: list[Stmt] = []
        self._deps: dict[Node, frozenset[Node]] = {}
        self._invariants: dict[Node, bool] = {}
        self._scan()
        kept_dims = [d for d, n in enumerate(self.shape) if d not in self.reduced and n != 1]
        red_dims = [d for d in sorted(self.reduced) if self.shape[d] != 1]
        self.kept_loops = group_dims(kept_dims, self.shape, self.reduced, self.accesses)
        self.red_loops = group_dims(red_dims, self.shape, self.reduced, self.accesses)
        self.parallel = parallel and bool(self.kept_loops)

    def arg(self, key: Node) -> str:
        """The argument name the load ``key`` reads, named ``in<n>`` at its first use."""
        operand = self.load_operand[key]
        if operand not in self.in_names:
            self.in_names[operand] = f"in{len(self.in_names)}"
        return self.in_names[operand]

    def sig(self, node: Node) -> bytes:
        """The structural key (``ir/key.py``) of what ``node`` computes in this kernel, blind to
        which buffers it reads and to the operand order of commutative ops (``ir/optable``): the
        canonical order of operands and outputs."""
        return self.sigs[node]

    def _stand_in(self, node: Node) -> tuple | None:
        """What stands for a load in the kernel's structural keys: its dtype and view."""
        if node in self.k.loads and node not in self.body:
            v = self.views[node]
            return ("load", node.dtype, v.shape, v.strides, v.offset, v.masks)
        return None

    def _in_kernel_inputs(self, node: Node) -> tuple[Node, ...]:
        """The inputs of ``node`` that this kernel does not read from memory."""
        return () if node in self.k.loads and node not in self.body else node.inputs

    # ------------------------------------------------------------------ analysis
    def level(self, node: Node) -> str:
        return self.k.level(node)

    def _scan(self) -> None:
        """Number the nodes for the listing and record every memory access (for loop merging)."""
        for key in self.k.loads:
            self._id(key)
        for node in self.k.body:
            if node.op in ("const", "rand", "expand"):
                self._visit(node, None)  # leaves the fuser chose to list in the body
                continue
            for i, inp in enumerate(node.inputs):
                gather_x = node.op == "gather" and i == 0
                self._visit(inp, node if gather_x else None)
            self._id(node)
        for out in self.k.outputs:
            self._visit(out, None)
            self.accesses.append(Access(View.contiguous(out.shape), self.level(out)))

    def _visit(self, node: Node, gather: Node | None) -> None:
        if node in self.body and node.op not in ("const", "rand", "expand"):
            return
        if node in self.k.loads:
            view = self.views[node]
            if gather is not None:
                self.accesses.append(Access(view, self.level(gather), (gather.attrs[0],)))
            else:
                self.accesses.append(Access(view, self.level(node)))
        elif node.op == "rand":
            self._id(node.inputs[0])  # the key is read at fixed offsets, not through the loops
            self.accesses.append(Access(View.contiguous(node.shape), self.level(node)))
        elif node.op == "expand" and node.inputs:
            self._visit(node.inputs[0], None)
        self._id(node)

    def _id(self, node: Node) -> None:
        if node not in self.ids:
            self.ids[node] = len(self.ids)

    # ------------------------------------------------------------------ index arithmetic
    def index(self, view: View, level: str, override: dict[int, tuple[Value, int]] | None = None
              ) -> tuple[Index, list[Cond]] | None:
        """Offset and validity conditions of ``view`` at the current loop indices.

        ``override`` gives dims an index and extent of their own (a gather's axis).
        Returns None when the access always reads zero.
        """
        override = override or {}
        loops = self.kept_loops if level == "kept" else self.kept_loops + self.red_loops
        axes: list[tuple[Value, int, int, tuple[int, int, int] | None]] = []
        covered: set[int] = set()
        for ax in loops:
            if any(d in override for d in ax.dims):
                continue
            mask = view.mask(ax.dims[0]) if len(ax.dims) == 1 else None
            axes.append((Ref(ax.var), ax.extent, view.strides[ax.dims[-1]], mask))
            covered.update(ax.dims)
        for d, (var, extent) in override.items():
            axes.append((var, extent, view.strides[d], view.mask(d)))
            covered.add(d)
        zero_dims = [d for d in range(len(view.shape)) if d not in covered]
        if any(view.shape[d] != 1 for d in zero_dims):
            raise LoweringError(f"{self.k.name}: view of shape {view.shape} does not fit the "
                                f"{level} loops of kernel shape {self.shape}")
        for d in zero_dims:  # index 0 there: valid only if the mask starts at 0 and is not empty
            m = view.mask(d)
            if m is not None and (m[0] != 0 or m[2] == 0):
                return None
        return flat_index(view.offset, axes)

    # ------------------------------------------------------------------ values
    def emit(self, stmt: Stmt) -> None:
        self.blocks[-1].append(stmt)

    def fresh(self, prefix: str = "v") -> str:
        self.n_vars += 1
        return f"{prefix}{self.n_vars}"

    def value(self, node: Node, memo: dict[Node, Value]) -> Value:
        """The name (or literal) holding ``node`` at the current loop indices, emitting what it
        needs: one assignment per node, operands first, so no value nests deeper than one op."""
        for n in post_order(node, self._operands,
                            lambda n: self._known(n, memo) is not None):
            if not self._alias(n):
                self._compute(n, memo)
        known = self._known(node, memo)
        assert known is not None
        return known

    def _alias(self, node: Node) -> bool:
        """``expand(r)`` of a body node: it reads the value (an accumulator) of ``r`` itself."""
        return node.op == "expand" and node.inputs[0] in self.body and \
            not (node in self.k.loads and node not in self.body)

    def _known(self, node: Node, memo: dict[Node, Value]) -> Value | None:
        """The value already holding ``node`` here, or None if it must be computed."""
        while self._alias(node):
            node = node.inputs[0]
        if node in self.kept:
            return self.kept[node]
        if node in memo:
            return memo[node]
        if node.op == "const":
            return Lit(node.attrs[0], node.dtype)
        return None

    def _operands(self, node: Node) -> tuple[Node, ...]:
        """The values ``_compute`` reads to compute ``node``, in the order it reads them."""
        if (node in self.k.loads and node not in self.body) or node.op == "rand":
            return ()
        if self._alias(node):
            return node.inputs[:1]
        if node not in self.body:
            raise LoweringError(f"{self.k.name}: {node!r} is not a body node, load, const, rand "
                                "or expand of a body node")
        if node.op in REDUCE:
            raise LoweringError(f"{self.k.name}: {node!r} is used before its reduction ran")
        if node.op == "gather":
            return node.inputs[1:]
        return tuple(sorted(node.inputs, key=self.sig)) if is_commutative(node) else node.inputs

    def _compute(self, node: Node, memo: dict[Node, Value]) -> None:
        """Emit ``vN = <value>`` for ``node`` once its operands are known."""
        if node in self.k.loads and node not in self.body:
            value = self.load_value(node)
        elif node.op == "rand":
            value = self.rand_value(node)
        elif node.op == "gather":
            value = self.gather_value(node, memo)
        else:
            value = Apply(node, tuple(self._known(i, memo) for i in self._operands(node)))
        name = self.fresh()
        self.emit(Assign(name, value))
        memo[node] = Ref(name)

    def _read(self, array: str, dtype: str, access: tuple[Index, list[Cond]] | None) -> Value:
        if access is None:
            return Lit(0, dtype)
        index, conds = access
        return Read(array, index, dtype, tuple(hoist(conds, self.loops, self.fresh)))

    def load_value(self, node: Node) -> Value:
        level = self.level(node)
        self._check_level(node, level)
        return self._read(self.arg(node), node.dtype, self.index(self.views[node], level))

    def gather_value(self, node: Node, memo: dict[Node, Value]) -> Value:
        x, idx = node.inputs
        axis = node.attrs[0]
        if x not in self.k.loads:
            raise LoweringError(f"{self.k.name}: gather source {x!r} must be a load")
        where = self.value(idx, memo)
        size = x.shape[axis]
        # an index computed in the graph is only known here: refuse to read outside the source
        self.emit(CheckIndex(where, size, f"index out of range in gather along an axis of size "
                                          f"{size} (indexing, embedding or a class index)"))
        access = self.index(self.views[x], self.level(node), {axis: (where, size)})
        return self._read(self.arg(x), node.dtype, access)

    def rand_value(self, node: Node) -> Value:
        key = node.inputs[0]
        if key not in self.rand_keys:
            if key not in self.k.loads:
                raise LoweringError(f"{self.k.name}: rand key {key!r} must be a load")
            n = len(self.rand_keys)
            names = (Ref(f"seed{n}"), Ref(f"counter{n}"))
            self.rand_keys[key] = names
            for ref, i in zip(names, (0, 1)):
                offset = _static_offset(self.views[key], (i,))
                value: Value = Index() if offset is None else \
                    Read(self.arg(key), Index(offset), key.dtype)
                self.prelude.append(Assign(ref.name, value))
        seed, counter = self.rand_keys[key]
        level = self.level(node)
        self._check_level(node, level)
        access = self.index(View.contiguous(node.shape), level)
        assert access is not None
        return Uniform(node.dtype, seed, counter, access[0])

    def _check_level(self, node: Node, level: str) -> None:
        if level == "kept" and node.shape != self.k.kept_shape:
            raise LoweringError(f"{self.k.name}: {node!r} is neither the kernel shape {self.shape} "
                                f"nor the kept shape {self.k.kept_shape}")

    # ------------------------------------------------------------------ loops
    def open_loops(self, axes: list[LoopAxis], parallel: bool = False) -> None:
        for j, ax in enumerate(axes):
            loop = Loop(ax.var, ax.extent, parallel and j == 0)
            self.emit(loop)
            self.blocks.append(loop.body)
            self.loops.append(OpenLoop(loop))

    def close_loops(self, axes: list[LoopAxis]) -> None:
        del self.blocks[len(self.blocks) - len(axes):]
        del self.loops[len(self.loops) - len(axes):]

    def write_output(self, out: Node, memo: dict[Node, Value]) -> None:
        self.store_output(out, self.value(out, memo))

    def store_output(self, out: Node, val: Value) -> None:
        access = self.index(View.contiguous(out.shape), self.level(out))
        assert access is not None
        self.emit(Store(self.arg_names[out], access[0], val))

    def _reduction_comment(self, r: Node) -> Comment:
        axes = r.attrs[0] if r.op != "argmax" else (r.attrs[0],)
        return Comment(f"%{self.ids[r]} = {r.op}(%{self.ids[r.inputs[0]]}) over axes {tuple(axes)}")

    def store_first(self, reds: list[Node], done: set[Node], stored: dict[Node, Value]) -> None:
        """With ``cpu``: before the pass of ``reds``, the full-shape outputs they read that need
        no reduction but those in ``done`` are written in a pass of their own, and ``stored``
        gets the value reading each one back from its output. Otherwise the reduction computes
        them and the epilogue computes them again (a log-softmax over 10000 classes computed
        its 10M ``exp`` twice). The pass chains no additions, so it vectorises: a ``where`` in
        it is a vector select, where inside a sum it is a branch that a relu's mask mispredicts
        half the time (a relu gradient's channel sum over 32x32x32: 9.4 -> 2.5 ms)."""
        if not self.cpu:
            return
        read = set().union(*(self._in_kernel_closure(r.inputs[0]) for r in reds))
        first = [o for o in self.outputs if self.level(o) == "full" and o in read
                 and o not in stored and self.reductions_under(o) <= done]
        if not first:
            return
        self.emit(Comment("full-shape outputs the reductions read: stored first"))
        self.open_loops(self.red_loops)
        memo: dict[Node, Value] = {}
        for out in first:
            self.write_output(out, memo)
            access = self.index(View.contiguous(out.shape), "full")
            assert access is not None
            stored[out] = Read(self.arg_names[out], access[0], out.dtype)
        self.close_loops(self.red_loops)
        self.notes.append("stored first: " + ", ".join(
            f"%{self.ids[o]} -> {self.arg_names[o]}" for o in first)
            + " (written before the reductions that read it, which read it back)")

    def _in_kernel_closure(self, node: Node) -> set[Node]:
        """``node`` and every node of this kernel its value is computed from."""
        seen: set[Node] = set()
        for n in post_order(node, self._in_kernel_inputs, seen.__contains__):
            seen.add(n)
        return seen

    def stage(self, reds: list[Node], stored: dict[Node, Value] | None = None) -> None:
        """One pass over the reduced axes updating the accumulators of ``reds``; ``stored``:
        the values already in an output (``stored_first``)."""
        updates = []
        for r in reds:
            acc = self.fresh("acc")
            self.emit(self._reduction_comment(r))
            best = None
            if r.op == "sum":
                self.emit(Accumulator(acc, accumulator_dtype(r), 0))
            elif r.op == "max":
                self.emit(Accumulator(acc, r.dtype, lowest(r.dtype)))
            else:
                best = self.fresh("best")
                src = r.inputs[0].dtype
                self.emit(Accumulator(best, src, lowest(src)))
                self.emit(Accumulator(acc, "int64", 0))
            updates.append((r, acc, best))
        self.open_loops(self.red_loops)
        memo: dict[Node, Value] = dict(stored or {})
        for r, acc, best in updates:
            x = self.value(r.inputs[0], memo)
            self.emit(self._update(r, x, AccRef(acc), best))
        self.close_loops(self.red_loops)
        for r, acc, _ in updates:
            self.kept[r] = Ref(acc)
            if accumulator_dtype(r) != r.dtype:
                rounded = self.fresh("s")
                self.emit(Assign(rounded, Convert(Ref(acc), r.dtype)))
                self.kept[r] = Ref(rounded)

    def _update(self, r: Node, x: Value, acc: AccRef, best: str | None) -> Accumulate:
        dt = r.inputs[0].dtype
        if r.op != "argmax":
            return Accumulate(r.op, acc, x, dt)
        where = next((ax.var for ax in self.red_loops if r.attrs[0] in ax.dims), None)
        position = Index() if where is None else Index(0, (Term(Ref(where), 1),))
        return Accumulate("argmax", acc, x, dt, best, position)

    # ------------------------------------------------------------------ whole function
    def function_body(self) -> None:
        if self._reduced_outermost():
            self.reduce_outer_body()
            return
        if not self.k.reduce_axes:
            self.elementwise_body()
            return
        self.open_loops(self.kept_loops, self.parallel)
        self.reduce_body()
        self.close_loops(self.kept_loops)

    def elementwise_body(self) -> None:
        """Values that read only single elements (hyperparameters, step counts) once, before the
        loop; then, per element, every output's value before the first store: an output may be
        the array of a load (an assign's target, numba_cpu/program_assigns.py), read at the
        element it is written, so the compiler cannot hoist those reads itself."""
        memo: dict[Node, Value] = {}
        for out in self.outputs:
            for n in post_order(out, self._operands, lambda n: self._known(n, memo) is not None):
                if self._invariant(n) and n.op != "const":
                    self.value(n, memo)
        loops, tiled = self.tiled_loops()
        self.open_loops(loops, self.parallel)
        if tiled is not None:
            tiles = (Term(Ref(tiled + "b"), TILE), Term(Ref(tiled + "t"), 1))
            self.emit(Assign(tiled, Index(0, tiles)))
        values = [self.value(out, memo) for out in self.outputs]
        for out, val in zip(self.outputs, values):
            self.store_output(out, val)
        self.close_loops(loops)

    def tiled_loops(self) -> tuple[list[LoopAxis], str | None]:
        """The kept loops, with one of them cut into tiles when a load reads the innermost loop
        with a stride (a transposing copy): loop ``L``, whose stride in that load is 1, becomes
        ``Lb`` (its tiles, in ``L``'s place) and ``Lt`` (``TILE`` elements, innermost), so each
        pass of the inner loops reads whole cache lines of the source instead of one element
        per line. A (32, 64, 1024) -> (32, 1024, 64) copy went from 7.6 to 2.0 ms. Also returns
        the tiled loop's variable, which the innermost loop sets from the two (None if none)."""
        loops = self.kept_loops
        if not self.cpu or len(loops) < 2 or loops[-1].extent < TILE:
            return loops, None
        last = loops[-1].dims[-1]
        for acc in self.accesses:
            stride = acc.view.strides[last]
            if acc.free or stride in (0, 1, -1) or acc.view.masks:
                continue
            for pos, ax in enumerate(loops[:-1]):
                if acc.view.strides[ax.dims[-1]] == 1 and ax.extent % TILE == 0 \
                        and ax.extent > TILE:
                    self.notes.append(f"tiled: loop {ax.var} in tiles of {TILE} inside loop "
                                      f"{loops[-1].var} (a load reads {loops[-1].var} with "
                                      f"stride {stride}, {ax.var} with stride 1)")
                    return (loops[:pos] + [LoopAxis(ax.var + "b", ax.dims, ax.extent // TILE)]
                            + loops[pos + 1:] + [LoopAxis(ax.var + "t", ax.dims, TILE)]), ax.var
        return loops, None

    def _invariant(self, node: Node) -> bool:
        """Whether ``node`` has one value for every element of an elementwise kernel: a
        constant, a load of a single element (all strides zero, no mask), or an elementwise op
        on such values."""
        known = self._invariants.get(node)
        if known is None:
            if node.op == "const":
                known = True
            elif node in self.k.loads and node not in self.body:
                view = self.views[node]
                known = view.masks is None and not any(view.strides)
            else:
                known = node in self.body and node.op in ELEMENTWISE and \
                    all(self._invariant(i) for i in node.inputs)
            self._invariants[node] = known
        return known

    def reductions_under(self, node: Node) -> frozenset[Node]:
        """The reductions of this kernel that ``node``'s value depends on (itself included)."""
        for n in post_order(node, self._in_kernel_inputs, self._deps.__contains__):
            below = frozenset().union(*(self._deps[i] for i in self._in_kernel_inputs(n)))
            self._deps[n] = below | {n} if n in self.body and n.op in REDUCE else below
        return self._deps[node]

    def _reduced_outermost(self) -> bool:
        """Whether to nest the loops reduced axes outside, kept axes inside: when every reduced
        axis comes before every kept one (a sum over the batch, as for a bias gradient), or, on
        the CPU, when every load walks the kept axes with smaller strides than the reduced ones
        (a per-channel sum of a channels-last tensor: ``_kept_inner_in_memory``), and the
        reductions are sums and maxes that need no other reduction (one pass). The usual nesting
        would walk memory with the reduced axis's stride; this one walks the contiguous kept
        axes, so the inner loop vectorises (10x on a 64x256 column sum)."""
        if self.parallel or not (self.k.reduce_axes and self.kept_loops and self.red_loops):
            return False
        red = [d for ax in self.red_loops for d in ax.dims]
        kept = [d for ax in self.kept_loops for d in ax.dims]
        if max(red) > min(kept) and not (self.cpu and self._kept_inner_in_memory(red, kept)):
            return False
        reds = [n for n in self.k.body if n.op in REDUCE]
        return all(r.op in ("sum", "max") and not self.reductions_under(r.inputs[0])
                   for r in reds)

    def _kept_inner_in_memory(self, red: list[int], kept: list[int]) -> bool:
        """Whether every full-shape load that steps through both kept and reduced axes steps
        through the kept ones with smaller strides (and at least one load does): the reduced
        loops outside then read memory in order. The batch norm's channel sums over an NHWC
        (32, 16, 16, 64) product took 3.0 ms with the reduction innermost (stride 64)."""
        found = False
        for acc in self.accesses:
            if acc.level != "full" or acc.free:
                continue
            strides = acc.view.strides
            inner = [abs(strides[d]) for d in kept if strides[d]]
            outer = [abs(strides[d]) for d in red if strides[d]]
            if inner and outer:
                if max(inner) >= min(outer):
                    return False
                found = True
        return found

    def reduce_outer_body(self) -> None:
        """Reductions with the reduced loops outside the kept ones (see ``_reduced_outermost``):
        an array of accumulators, one per kept position; each still adds its values in the
        order the usual nesting would, so results are bitwise the same."""
        reds = [n for n in self.k.body if n.op in REDUCE]
        access = self.index(View.contiguous(self.k.kept_shape), "kept")
        assert access is not None
        flat = access[0]
        size = math.prod(self.k.kept_shape)
        self.emit(Comment("reduced axes outermost: one accumulator per kept position"))
        accs = []
        for r in reds:
            acc = self.fresh("acc")
            dtype = accumulator_dtype(r)
            init = 0 if r.op == "sum" else lowest(dtype)
            self.emit(self._reduction_comment(r))
            self.emit(Accumulator(acc, dtype, init, size))
            accs.append((r, AccRef(acc, flat)))
        full = [o for o in self.outputs if self.level(o) == "full"]
        early = [o for o in full if not self.reductions_under(o)]
        self.open_loops(self.red_loops)
        self.open_loops(self.kept_loops)
        memo: dict[Node, Value] = {}
        for r, acc in accs:
            self.emit(self._update(r, self.value(r.inputs[0], memo), acc, None))
        for out in early:  # full-shape outputs that need no reduction: in the same pass
            self.write_output(out, memo)
        self.close_loops(self.kept_loops)
        self.close_loops(self.red_loops)
        for r, acc in accs:
            self.kept[r] = acc if accumulator_dtype(r) == r.dtype else Convert(acc, r.dtype)
        late = [o for o in full if o not in early]
        if late:
            self.emit(Comment("epilogue: full-shape outputs"))
            self.open_loops(self.red_loops)
            self.open_loops(self.kept_loops)
            memo = {}
            for out in late:
                self.write_output(out, memo)
            self.close_loops(self.kept_loops)
            self.close_loops(self.red_loops)
        kept_outputs = [o for o in self.outputs if self.level(o) == "kept"]
        if kept_outputs:
            self.open_loops(self.kept_loops)
            memo = {}
            for out in kept_outputs:
                self.write_output(out, memo)
            self.close_loops(self.kept_loops)

    def reduce_body(self) -> None:
        reductions_under = self.reductions_under
        stored: dict[Node, Value] = {}
        done: set[Node] = set()
        pending: list[Node] = []

        def run_stage() -> None:
            self.store_first(pending, done, stored)
            self.stage(pending, stored)
            done.update(pending)
            pending.clear()

        for node in self.k.body:
            if node.op in REDUCE:
                if reductions_under(node.inputs[0]) & set(pending):
                    run_stage()
                pending.append(node)
            elif self.level(node) == "kept":
                if pending:
                    run_stage()
                self.value(node, self.kept)
        if pending:
            run_stage()
        full = [o for o in self.outputs if self.level(o) == "full" and o not in stored]
        if full:
            self.emit(Comment("epilogue: full-shape outputs"))
            self.open_loops(self.red_loops)
            memo: dict[Node, Value] = {}
            for out in full:
                self.write_output(out, memo)
            self.close_loops(self.red_loops)
        for out in self.outputs:
            if self.level(out) == "kept":
                self.write_output(out, self.kept)

    def listing(self) -> list[str]:
        """The kernel and the IR it computes, one line each: for a comment block."""
        k = self.k
        mode = "parallel" if self.parallel else "serial"
        lines = [f"kernel {k.name}: shape {list(k.shape)}, reduce axes {list(k.reduce_axes)}, {mode}"]
        for n in self.outputs:
            lines.append(f"  {self.arg_names[n]}: {n.type_str} output")
        for (n, base), name in self.in_names.items():
            at = f" from element {base} on" if base else ""
            lines.append(f"  {name}: {n.type_str} input{at}")
        for node, i in self.ids.items():
            if node in k.loads and node not in self.body:
                v = self.views[node]
                rhs = f"load({self.arg(node)}, strides={list(v.strides)}, offset={v.offset}"
                rhs += f", masks={list(v.masks)})" if v.masks else ")"
            elif node.op == "const":
                rhs = f"const[{node.attrs[0]!r}]"
            else:
                attrs = f"{list(node.attrs)}" if node.attrs else ""
                args = ", ".join(f"%{self.ids[j]}" for j in node.inputs if j in self.ids)
                rhs = f"{node.op}{attrs}({args})"
            line = f"  %{i} : {node.type_str} = {rhs}"
            if node in k.outputs:
                line += f" -> {self.arg_names[node]}"
            if node.loc:
                line += f"   # {node.loc}".replace("\n", " ")
            lines.append(line)
        lines.extend(f"note: {note}" for note in [*k.notes, *self.notes])
        return lines

    def nest(self) -> LoopNest:
        self.function_body()
        for key in self.k.loads:  # loads the code never reads still get their argument
            self.arg(key)
        params = [Param(self.arg_names[n], n, 0, True) for n in self.outputs]
        params += [Param(name, n, base, False) for (n, base), name in self.in_names.items()]
        return LoopNest(self.k.name, function_name(self.k.name), tuple(params), self.parallel,
                        tuple(self.listing()), self.prelude, self.top, bool(self.rand_keys))


def _static_offset(view: View, index: tuple[int, ...]) -> int | None:
    """Flat offset of a constant ``index`` in ``view``; None where a mask makes it read zero."""
    offset = view.offset
    for d, i in enumerate(index):
        m = view.mask(d)
        if m is not None:
            start, step, count = m
            if i < start or (i - start) % step or (i - start) // step >= count:
                return None
            i = (i - start) // step
        offset += i * view.strides[d]
    return offset
