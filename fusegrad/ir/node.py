"""Node: one immutable, hash-consed IR value.

Structurally equal nodes are the same object (CSE for free, a structural key for caches).
A node's source location is kept from the first time it was built and is not part of its
identity.
"""
from __future__ import annotations

import itertools
from weakref import ref

from .dtypes import SHORT


class KeyRef(ref):
    """A weak reference that knows its dictionary key (made without Python code, unlike
    ``weakref.KeyedRef``)."""

    __slots__ = ("key",)


# (op, input uids, shape, dtype, attrs) -> weak reference to the live node; the reference's
# callback drops the entry.
# A plain dict: a ``WeakValueDictionary`` runs Python code on every store, and tracing makes
# thousands of nodes per step.
_INTERN: "dict[tuple, KeyRef]" = {}
_counter = itertools.count()


def _forget(wr: KeyRef) -> None:
    if _INTERN.get(wr.key) is wr:
        del _INTERN[wr.key]


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
        # The inputs by uid, not by reference: a key of numbers and strings is untracked by
        # Python's cyclic GC (one object less per node for every collection to walk), and a
        # uid is never reused while its node is alive.
        n = len(inputs)
        if n == 1:
            key = (op, inputs[0].uid, shape, dtype, attrs)
        elif n == 2:
            key = (op, inputs[0].uid, inputs[1].uid, shape, dtype, attrs)
        else:
            key = (op, tuple([i.uid for i in inputs]), shape, dtype, attrs)
        wr = _INTERN.get(key)
        if wr is not None:
            node = wr()
            if node is not None:
                return node
        node = object.__new__(cls)
        node.op, node.inputs, node.shape, node.dtype, node.attrs = op, inputs, shape, dtype, attrs
        node.loc = loc
        node.uid = next(_counter)
        wr = _INTERN[key] = KeyRef(node, _forget)
        wr.key = key
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
