"""The op sets other modules use (``ops.UNARY``, ``ops.REDUCE``, ...), derived from the table.

Importing this module loads every row module, so the sets are complete.
"""
from __future__ import annotations

from . import elementwise, indexing, leaf, movement, reduce, store  # noqa: F401 (declare the rows)
from .spec import TABLE, Category


def _names(category: Category, arity: int | None = None) -> frozenset[str]:
    return frozenset(s.name for s in TABLE.values()
                     if s.category is category and (arity is None or s.arity == arity))


LEAF = _names(Category.LEAF)
UNARY = _names(Category.ELEMENTWISE, 1)
BINARY = _names(Category.ELEMENTWISE, 2)
TERNARY = _names(Category.ELEMENTWISE, 3)
COMPARE = frozenset(n for n in BINARY if TABLE[n].result == "bool")
ELEMENTWISE = _names(Category.ELEMENTWISE)
REDUCE = _names(Category.REDUCE)
MOVEMENT = _names(Category.MOVEMENT)
GATHER = _names(Category.GATHER)
EXTERN = _names(Category.EXTERN)
STORE = _names(Category.STORE)
(ASSIGN,) = STORE  # the one store op: ``assign``
ALL_OPS = frozenset(TABLE)
