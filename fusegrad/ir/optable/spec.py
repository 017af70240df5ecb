"""What the op table says about one primitive: the ``OpSpec`` record and the registry.

Every primitive is declared once, as an ``OpSpec`` in one of the row modules of this package
(``leaf``, ``elementwise``, ``reduce``, ``movement``, ``indexing``, ``store``). The interpreter,
constant folding, CSE, autodiff, the tracer and each backend's renderer read these records
instead of keeping their own lists.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..dtypes import DTYPES
from ..node import Node

Grads = tuple[Node | None, ...]
Reference = Callable[[Node, list[np.ndarray]], np.ndarray]
VjpRule = Callable[[Node, Node], Grads]

FLOAT = frozenset({"float32", "float64"})
ANY = frozenset(DTYPES)
INTEGER_AND_BOOL = frozenset({"bool", "int32", "int64"})


class Category(enum.Enum):
    """How a primitive reads its operands, which decides how passes and fusion treat it."""

    LEAF = "leaf"                # no value operands: a buffer, a constant, random numbers
    ELEMENTWISE = "elementwise"  # output element i from operand elements i
    REDUCE = "reduce"            # over axes, kept as size-1 dims
    MOVEMENT = "movement"        # index arithmetic only
    GATHER = "gather"            # data-dependent reads
    EXTERN = "extern"            # a library kernel (BLAS, atomics), a fusion boundary
    STORE = "store"              # writes its value into the buffer of its first operand
    DEFERRED = "deferred"        # stands for a subgraph built only when compiled (a gradient)


class NotDifferentiable:
    """The VJP marker of an op whose output carries no gradient (a bool or integer result, a
    piecewise-constant function, a leaf or ``detach``)."""

    def __repr__(self) -> str:
        return "NOT_DIFFERENTIABLE"


NOT_DIFFERENTIABLE = NotDifferentiable()

DtypeRule = Literal["same", "bool", "int64", "given"]

# The arity of an op that takes any number of operands (``concat``).
VARIADIC = -1


@dataclass(frozen=True)
class OpSpec:
    """One primitive op, declared once.

    Attributes:
        name: the op's name in the IR (``Node.op``).
        arity: number of inputs a node of this op has; ``VARIADIC`` for any number.
        category: see ``Category``.
        accepts: operand dtypes the op is defined on (for ``where``, those of its two values).
        result: the result dtype: ``"same"`` as the operands, ``"bool"``, ``"int64"``, or
            ``"given"`` by the constructor (casts and leaves).
        commutative: the operand dtypes for which swapping the two operands leaves every bit
            of the result unchanged. Float ``maximum``/``minimum`` are not commutative: the
            order decides which signed zero or which NaN comes out.
        reference: the numpy implementation, ``(node, operand arrays) -> array``; the
            interpreter runs it and constant folding evaluates it on 0-d operands. It may
            return a wider dtype; callers cast to ``node.dtype``.
        vjp: ``(node, grad) -> one gradient (or None) per input``, as IR, or
            ``NOT_DIFFERENTIABLE``.
        api: the public name for user-facing elementwise primitives the tracer exposes as
            ``fusegrad.<api>`` and ``Tensor.<api>`` straight from this table; None where the
            front end composes its own function.
    """

    name: str
    arity: int
    category: Category
    accepts: frozenset[str]
    result: DtypeRule
    reference: Reference
    vjp: VjpRule | NotDifferentiable
    commutative: frozenset[str] = frozenset()
    api: str | None = None

    def result_dtype(self, operand: str) -> str:
        """The dtype of this op's result on operands of dtype ``operand`` (not for ``given``)."""
        if self.result == "same":
            return operand
        if self.result == "given":
            raise ValueError(f"{self.name}: the result dtype is given by the constructor")
        return self.result

    def commutes(self, dtype: str) -> bool:
        """Whether the operands of a node of this op on ``dtype`` operands may be swapped."""
        return dtype in self.commutative

    @property
    def differentiable(self) -> bool:
        return not isinstance(self.vjp, NotDifferentiable)


TABLE: dict[str, OpSpec] = {}


def declare(*specs: OpSpec) -> None:
    """Add rows to the table; a name may be declared only once."""
    for spec in specs:
        if spec.name in TABLE:
            raise ValueError(f"op {spec.name!r} is declared twice")
        TABLE[spec.name] = spec


def elementwise_reference(fn: Callable[..., np.ndarray]) -> Reference:
    """A reference implementation applying the numpy function ``fn`` to the operand arrays."""
    def reference(node: Node, args: list[np.ndarray]) -> np.ndarray:
        return np.asarray(fn(*args))
    reference.__name__ = getattr(fn, "__name__", "reference")
    return reference
