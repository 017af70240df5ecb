"""The op table: every primitive of the IR declared once (see ``spec.OpSpec``).

Rows live by category in ``leaf``, ``elementwise``, ``reduce``, ``movement``, ``indexing`` and
``store``. Their VJP rules build IR with the constructors of ``ir/ops.py``, and ``ir/ops.py``
derives its op sets from this table (``views``): the constructors module is imported first, so
that either module can be imported first.
"""
from __future__ import annotations

from .. import ops  # noqa: F401 (must come first; see above)
from ..node import Node
from .spec import (NOT_DIFFERENTIABLE, TABLE, VARIADIC, Category, NotDifferentiable, OpSpec,
                   elementwise_reference)
from .views import (ALL_OPS, ASSIGN, BINARY, COMPARE, ELEMENTWISE, EXTERN, GATHER, LEAF,
                    MOVEMENT, REDUCE, STORE, TERNARY, UNARY)

__all__ = ["ALL_OPS", "ASSIGN", "BINARY", "COMPARE", "ELEMENTWISE", "EXTERN", "GATHER", "LEAF",
           "MOVEMENT", "NOT_DIFFERENTIABLE", "REDUCE", "STORE", "TABLE", "TERNARY", "UNARY",
           "VARIADIC", "Category",
           "NotDifferentiable", "OpSpec", "elementwise_reference", "is_commutative", "spec_of",
           "user_facing"]


def spec_of(op: str) -> OpSpec:
    """The table row of ``op``."""
    try:
        return TABLE[op]
    except KeyError:
        raise KeyError(f"{op!r} is not a primitive op of the IR") from None


def user_facing() -> list[OpSpec]:
    """The rows the tracer exposes by their public name (``OpSpec.api``), in table order."""
    return [s for s in TABLE.values() if s.api is not None]


def is_commutative(node: Node) -> bool:
    """Whether swapping the two operands of ``node`` leaves every bit of its result unchanged
    (per the table's ``commutative`` dtypes, e.g. integer but not float ``maximum``)."""
    return len(node.inputs) == 2 and TABLE[node.op].commutes(node.inputs[0].dtype)
