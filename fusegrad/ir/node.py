"""Node: one immutable, hash-consed IR value.

Structurally equal nodes are the same object (CSE for free, a structural key for caches).
A node's source location is kept from the first time it was built and is not part of its
identity.
"""
from __future__ import annotations

import itertools
from functools import partial
from weakref import ref

from .dtypes import SHORT

# Structural key -> weak reference to the live node. A plain dict of weakrefs whose callbacks
# drop the entry: about half the cost per node of a ``WeakValueDictionary`` (whose methods run
# in Python), and tracing makes thousands of nodes per step.
_INTERN: "dict[tuple, ref[Node]]" = {}
_counter = itertools.count()


def _forget(key: tuple, wr: "ref[Node]") -> None:
    if _INTERN.get(key) is wr:
        del _INTERN[key]


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
        wr = _INTERN.get(key)
        if wr is not None:
            node = wr()
            if node is not None:
                return node
        node = object.__new__(cls)
        node.op, node.inputs, node.shape, node.dtype, node.attrs = op, inputs, shape, dtype, attrs
        node.loc = loc
        node.uid = next(_counter)
        _INTERN[key] = ref(node, partial(_forget, key))
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
