"""Constructors of the primitive ops, with shape and dtype rules checked when a node is built.

Each primitive is declared once in the op table (``ir/optable``); the op sets here (``UNARY``,
``REDUCE``, ...) are views of it, and the elementwise constructors check operands against the
table's dtype rules. Everything else (softmax, losses, layers) is composed from these in the
front end. Elementwise ops take operands of one shape and dtype: broadcasting (``expand``) and
type promotion (``cast``) are explicit nodes, put in by the tracer.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
import weakref

import numpy as np

from .buffer import Buffer
from .dtypes import is_float
from .errors import DTypeError, ShapeError, with_location
from .node import Node
from .optable.spec import TABLE
from .optable.views import (ALL_OPS, ASSIGN, BINARY, COMPARE, ELEMENTWISE,  # noqa: F401
                            EXTERN, GATHER, LEAF, MOVEMENT, REDUCE, STORE, TERNARY, UNARY)

Shape = tuple[int, ...]



def prod(shape: Shape) -> int:
    return math.prod(shape)


def _fail(op: str, message: str, loc: str | None, kind: type = ShapeError):
    raise kind(with_location(f"{op}: {message}", loc))


# ----------------------------------------------------------------------------- leaves
def buffer(buf: Buffer, loc: str | None = None) -> Node:
    """The IR leaf reading ``buf`` (one node per Buffer, remembered on the buffer)."""
    ref = buf._node
    node = ref() if ref is not None else None
    if node is None:
        node = Node.leaf("buffer", buf.shape, buf.dtype, (buf,), loc)
        buf._node = weakref.ref(node)
    return node


_NAN = math.nan


def const(value: float | int | bool, shape: Shape, dtype: str, loc: str | None = None) -> Node:
    """A tensor of ``shape`` filled with ``value`` (stored in the dtype's Python type).

    Float values are rounded to the dtype and keyed by their exact bits (``float.hex``), so
    0.0 and -0.0 stay distinct and every NaN constant is one node.
    """
    if dtype == "bool":
        return Node("const", (), tuple(shape), dtype, (bool(value),), loc)
    if not is_float(dtype):
        return Node("const", (), tuple(shape), dtype, (int(value),), loc)
    value = float(np.float32(value)) if dtype == "float32" else float(value)
    if value != value:
        value = _NAN
    return Node("const", (), tuple(shape), dtype, (value, value.hex()), loc)


def rand(key: Node, shape: Shape, dtype: str, loc: str | None = None) -> Node:
    """Uniform [0, 1) numbers from a counter-based generator.

    ``key`` is an int64[2] node (seed, offset), a runtime input so that new random numbers never
    change the graph's structure: element ``i`` (C order) is a hash of (seed, offset + i).
    """
    if not is_float(dtype):
        _fail("rand", f"needs a float dtype, got {dtype}", loc, DTypeError)
    if key.shape != (2,) or key.dtype != "int64":
        _fail("rand", f"key must be int64[2], got {key.type_str}", loc, DTypeError)
    return Node("rand", (key,), tuple(shape), dtype, (), loc)


# ----------------------------------------------------------------------------- elementwise
def _check_accepts(op: str, dtype: str, x: Node, loc: str | None) -> None:
    accepts = TABLE[op].accepts
    if dtype not in accepts:
        wanted = "a float" if all(is_float(d) for d in accepts) else f"one of {sorted(accepts)}"
        _fail(op, f"needs {wanted} input, got {dtype}{list(x.shape)}", loc, DTypeError)


def unary(op: str, x: Node, loc: str | None = None) -> Node:
    """A unary elementwise node (any of ``UNARY`` but ``cast``, which takes its dtype)."""
    assert op in UNARY and op != "cast", op
    _check_accepts(op, x.dtype, x, loc)
    return Node(op, (x,), x.shape, TABLE[op].result_dtype(x.dtype), (), loc)


def cast(x: Node, dtype: str, loc: str | None = None) -> Node:
    if x.dtype == dtype:
        return x
    return Node("cast", (x,), x.shape, dtype, (), loc)


def binary(op: str, a: Node, b: Node, loc: str | None = None) -> Node:
    assert op in BINARY, op
    if a.shape != b.shape:
        _fail(op, f"shapes {list(a.shape)} and {list(b.shape)} differ", loc)
    if a.dtype != b.dtype:
        _fail(op, f"dtypes {a.dtype} and {b.dtype} differ", loc, DTypeError)
    _check_accepts(op, a.dtype, a, loc)
    return Node(op, (a, b), a.shape, TABLE[op].result_dtype(a.dtype), (), loc)


def where(cond: Node, a: Node, b: Node, loc: str | None = None) -> Node:
    if not (cond.shape == a.shape == b.shape):
        _fail("where", f"shapes {list(cond.shape)}, {list(a.shape)} and {list(b.shape)} differ",
              loc)
    if cond.dtype != "bool" or a.dtype != b.dtype:
        _fail("where", f"needs bool condition and equal value dtypes, got {cond.dtype}, "
              f"{a.dtype}, {b.dtype}", loc, DTypeError)
    return Node("where", (cond, a, b), a.shape, a.dtype, (), loc)


# ----------------------------------------------------------------------------- reductions
def reduce(op: str, x: Node, axes: tuple[int, ...], loc: str | None = None) -> Node:
    """Reduce over ``axes`` (sorted, non-negative), keeping them as size-1 dims."""
    assert op in ("sum", "max"), op
    axes = tuple(sorted(set(axes)))
    for a in axes:
        if not 0 <= a < len(x.shape):
            _fail(op, f"axis {a} out of range for shape {list(x.shape)}", loc)
    if op == "max" and any(x.shape[a] == 0 for a in axes):
        _fail(op, f"cannot take max over an empty axis of shape {list(x.shape)}", loc)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return Node(op, (x,), shape, x.dtype, (axes,), loc)


def argmax(x: Node, axis: int, loc: str | None = None) -> Node:
    if not 0 <= axis < len(x.shape) or x.shape[axis] == 0:
        _fail("argmax", f"axis {axis} invalid for shape {list(x.shape)}", loc)
    shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    return Node("argmax", (x,), shape, "int64", (axis,), loc)


# ----------------------------------------------------------------------------- movement
# The movement ops' checks, remembered by their arguments: a traced step builds the same few
# reshapes, permutes and expands again and again, and the generic checks cost more than the
# node. Entries are small tuples of ints; the table is cleared when it grows large.
_MOVES: dict[tuple, tuple] = {}
_MOVES_LIMIT = 4096


def _checked(check: Callable[[Node, tuple, str | None], tuple], x: Node, arg: tuple,
             loc: str | None) -> tuple:
    """``check(x, arg, loc)`` (which raises for bad arguments), remembered by ``x``'s shape and
    ``arg`` when ``arg`` is a tuple."""
    if type(arg) is not tuple:
        return check(x, arg, loc)
    key = (check, x.shape, arg)
    found = _MOVES.get(key)
    if found is None:
        found = check(x, arg, loc)
        if len(_MOVES) > _MOVES_LIMIT:
            _MOVES.clear()
        _MOVES[key] = found
    return found


def _reshape_to(x: Node, shape: Shape, loc: str | None) -> tuple[int, ...]:
    checked = tuple(int(d) for d in shape)
    if prod(checked) != x.size:
        _fail("reshape", f"cannot view shape {list(x.shape)} as {list(checked)}", loc)
    return checked


def _permutation(x: Node, perm: tuple[int, ...], loc: str | None) -> tuple:
    """(the permuted shape, the dims as ints), or () for the identity."""
    norm = tuple(int(p) for p in perm)
    if sorted(norm) != list(range(len(x.shape))):
        _fail("permute", f"{list(norm)} is not a permutation of the dims of {list(x.shape)}", loc)
    return () if norm == tuple(range(len(norm))) else (tuple(x.shape[p] for p in norm), norm)


def _expand_to(x: Node, shape: Shape, loc: str | None) -> tuple[int, ...]:
    checked = tuple(int(d) for d in shape)
    if len(checked) != len(x.shape) or any(s != d and s != 1 for s, d in zip(x.shape, checked)):
        _fail("expand", f"cannot expand shape {list(x.shape)} to {list(checked)}", loc)
    return checked


def reshape(x: Node, shape: Shape, loc: str | None = None) -> Node:
    checked = _checked(_reshape_to, x, shape, loc)
    if checked == x.shape:
        return x
    return Node("reshape", (x,), checked, x.dtype, (), loc)


def permute(x: Node, perm: tuple[int, ...], loc: str | None = None) -> Node:
    checked = _checked(_permutation, x, perm, loc)
    if not checked:
        return x
    return Node("permute", (x,), checked[0], x.dtype, (checked[1],), loc)


def expand(x: Node, shape: Shape, loc: str | None = None) -> Node:
    checked = _checked(_expand_to, x, shape, loc)
    if checked == x.shape:
        return x
    return Node("expand", (x,), checked, x.dtype, (), loc)


def slice_(x: Node, ranges: tuple[tuple[int, int, int], ...], loc: str | None = None) -> Node:
    """Take ``x[start:stop:step]`` per dim; ranges are normalised, steps positive."""
    if len(ranges) != len(x.shape):
        _fail("slice", f"{len(ranges)} ranges for shape {list(x.shape)}", loc)
    shape = []
    for (start, stop, step), d in zip(ranges, x.shape):
        if step <= 0 or not (0 <= start <= d) or not (start <= stop <= d):
            _fail("slice", f"range {start}:{stop}:{step} invalid for shape {list(x.shape)}", loc)
        shape.append(max(0, -(-(stop - start) // step)))
    shape_t = tuple(shape)
    if shape_t == x.shape:
        return x
    return Node("slice", (x,), shape_t, x.dtype, (tuple(ranges),), loc)


def pad(x: Node, shape: Shape, placement: tuple[tuple[int, int], ...],
        loc: str | None = None) -> Node:
    """Zeros of ``shape`` with ``x`` written at ``start + i*step`` per dim (inverse of slice)."""
    shape = tuple(shape)
    if len(placement) != len(x.shape) or len(shape) != len(x.shape):
        _fail("pad", f"placement {placement} does not fit {list(x.shape)} -> {list(shape)}", loc)
    for (start, step), n, d in zip(placement, x.shape, shape):
        if step <= 0 or start < 0 or (n > 0 and start + (n - 1) * step >= d):
            _fail("pad", f"cannot place {list(x.shape)} into {list(shape)} at {placement}", loc)
    if shape == x.shape:
        return x
    return Node("pad", (x,), shape, x.dtype, (tuple(placement),), loc)


# ----------------------------------------------------------------------------- indexing
def gather(x: Node, index: Node, axis: int, loc: str | None = None) -> Node:
    """``out[o] = x[o with o[axis] replaced by index[o]]`` (torch.gather with equal other dims)."""
    if index.dtype not in ("int32", "int64"):
        _fail("gather", f"index must be an integer tensor, got {index.dtype}", loc, DTypeError)
    if len(index.shape) != len(x.shape) or any(
            i != axis and a != b for i, (a, b) in enumerate(zip(x.shape, index.shape))):
        _fail("gather", f"index shape {list(index.shape)} does not match {list(x.shape)} "
              f"outside axis {axis}", loc)
    return Node("gather", (x, index), index.shape, x.dtype, (axis,), loc)


def scatter_add(index: Node, src: Node, axis: int, shape: Shape, loc: str | None = None) -> Node:
    """Zeros of ``shape`` plus ``src[o]`` added at ``o with o[axis] = index[o]`` (gather's VJP)."""
    if index.shape != src.shape or len(shape) != len(src.shape):
        _fail("scatter_add", f"index {list(index.shape)} / src {list(src.shape)} / out "
              f"{list(shape)} do not fit", loc)
    return Node("scatter_add", (index, src), tuple(shape), src.dtype, (axis,), loc)


# ----------------------------------------------------------------------------- extern
def matmul(a: Node, b: Node, loc: str | None = None) -> Node:
    """(M,K)@(K,N) or batched (B,M,K)@(B,K,N); broadcasting is done by the front end."""
    if a.dtype != b.dtype or not is_float(a.dtype):
        _fail("matmul", f"needs equal float dtypes, got {a.dtype} and {b.dtype}", loc, DTypeError)
    if len(a.shape) != len(b.shape) or len(a.shape) not in (2, 3) or a.shape[-1] != b.shape[-2] \
            or a.shape[:-2] != b.shape[:-2]:
        _fail("matmul", f"shapes {list(a.shape)} and {list(b.shape)} cannot be multiplied", loc)
    return Node("matmul", (a, b), a.shape[:-1] + b.shape[-1:], a.dtype, (), loc)


def pads_sum(parts: Sequence[Node], axis: int, loc: str | None = None) -> Node:
    """``parts`` (at least one) one after another along ``axis``, as the front end writes a
    concatenation: each padded into place, the pads added left to right. It fuses with what
    reads it; fusion turns a long one into ``concat``."""
    total = sum(p.shape[axis] for p in parts)
    shape = parts[0].shape[:axis] + (total,) + parts[0].shape[axis + 1:]
    acc: Node | None = None
    start = 0
    for p in parts:
        placement = tuple((start, 1) if d == axis else (0, 1) for d in range(len(shape)))
        piece = pad(p, shape, placement, loc)
        acc = piece if acc is None else binary("add", acc, piece, loc)
        start += p.shape[axis]
    assert acc is not None
    return acc


def concat(parts: tuple[Node, ...], axis: int, loc: str | None = None) -> Node:
    """``parts`` one after another along ``axis`` (equal shapes and dtypes elsewhere).

    The front end writes a concatenation as a sum of pads (``tracer.functions.cat``), which fuses
    with what computes its pieces; fusion turns a long one into this op, a copy per piece
    (``ir/passes/fuse_normalise.py``).
    """
    first = parts[0].shape if parts else ()
    others = {p.shape[:axis] + p.shape[axis + 1:] for p in parts if len(p.shape) == len(first)}
    if not 0 <= axis < len(first) or len(others) != 1 or len({p.dtype for p in parts}) != 1 \
            or any(len(p.shape) != len(first) for p in parts):
        _fail("concat", f"cannot concatenate {[list(p.shape) for p in parts]} along axis {axis}",
              loc)
    shape = first[:axis] + (sum(p.shape[axis] for p in parts),) + first[axis + 1:]
    return Node("concat", tuple(parts), shape, parts[0].dtype, (axis,), loc)


def grad(root: Node, seed: Node, leaf: Node, loc: str | None = None) -> Node:
    """The gradient of ``root`` weighted by ``seed`` with respect to ``leaf``, built only when
    the graph is compiled (``autodiff.expand_gradients``)."""
    return Node("grad", (root, seed, leaf), leaf.shape, leaf.dtype, (), loc)


def allreduce(x: Node, op: str = "sum", loc: str | None = None) -> Node:
    """``x`` reduced elementwise with ``op`` over every process (``ir/collective.py``)."""
    from .collective import REDUCE_OPS
    if op not in REDUCE_OPS:
        _fail("allreduce", f"op must be one of {', '.join(REDUCE_OPS)}, got {op!r}", loc)
    if x.dtype == "bool" or op == "avg" and not is_float(x.dtype):
        _fail("allreduce", f"op {op!r} needs a {'float' if op == 'avg' else 'number'} tensor, "
              f"got {x.dtype}", loc, DTypeError)
    return Node("allreduce", (x,), x.shape, x.dtype, (op,), loc)


# ----------------------------------------------------------------------------- state
def assign(target: Node, value: Node, loc: str | None = None) -> Node:
    """Write ``value`` into the buffer of ``target`` (a ``buffer`` leaf) and give that buffer.

    Every read of the target in the same program sees its value from before the write. The
    node is a graph root, never an operand (see ``optable/store.py``).
    """
    if target.op != "buffer":
        _fail("assign", f"target must be a buffer leaf, got {target.op}", loc)
    if value.shape != target.shape:
        _fail("assign", f"value shape {list(value.shape)} does not match target shape "
              f"{list(target.shape)}", loc)
    if value.dtype != target.dtype:
        _fail("assign", f"value dtype {value.dtype} does not match target dtype "
              f"{target.dtype}", loc, DTypeError)
    return Node(ASSIGN, (target, value), target.shape, target.dtype, (), loc)
