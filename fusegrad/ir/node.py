"""Node: one immutable, hash-consed IR value.

Structurally equal nodes are the same object (CSE for free, a structural key for caches).
A node's source location is kept from the first time it was built and is not part of its
identity.
"""
from __future__ import annotations

import itertools
import weakref

from .dtypes import SHORT

_INTERN: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()
_counter = itertools.count()


class Node:
    """An IR value: ``op`` applied to ``inputs``, with static ``shape``, ``dtype`` and ``attrs``."""

    __slots__ = ("op", "inputs", "shape", "dtype", "attrs", "loc", "uid", "__weakref__")

    op: str
    inputs: tuple["Node", ...]
    shape: tuple[int, ...]
    dtype: str
    attrs: tuple
    loc: str | None
    uid: int

    def __new__(cls, op: str, inputs: tuple["Node", ...], shape: tuple[int, ...], dtype: str,
                attrs: tuple = (), loc: str | None = None) -> "Node":
        key = (op, inputs, shape, dtype, attrs)
        node = _INTERN.get(key)
        if node is not None:
            return node
        node = object.__new__(cls)
        node.op, node.inputs, node.shape, node.dtype, node.attrs = op, inputs, shape, dtype, attrs
        node.loc = loc
        node.uid = next(_counter)
        _INTERN[key] = node
        return node

    @classmethod
    def leaf(cls, op: str, shape: tuple[int, ...], dtype: str, attrs: tuple,
             loc: str | None = None) -> "Node":
        """A leaf that is unique by construction (a buffer: its attrs hold the Buffer object),
        made without the interning table: the caller keeps it unique (``ops.buffer``)."""
        node = object.__new__(cls)
        node.op, node.inputs, node.shape, node.dtype, node.attrs = op, (), shape, dtype, attrs
        node.loc = loc
        node.uid = next(_counter)
        return node

    def __reduce__(self):  # nodes are process-local; never pickle them by accident
        raise TypeError("IR nodes cannot be pickled")

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_str(self) -> str:
        return f"{SHORT[self.dtype]}[{','.join(map(str, self.shape))}]"

    def __repr__(self) -> str:
        attrs = f" {self.attrs}" if self.attrs and self.op != "buffer" else ""
        return f"<{self.op}{attrs} {self.type_str} #{self.uid}>"
