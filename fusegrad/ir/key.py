"""Structural keys: what a node or a graph computes, independent of object identity.

``StructuralKeys`` is the one per-node key: a digest computed bottom-up from op, shape, dtype,
attrs and the inputs' digests, with the inputs of commutative ops (as the op table defines
them, per dtype) in sorted order, so ``a + b`` and ``b + a`` get one key. It is the same in
every process (no object ids or uids). CSE orders operands by it and the numba_cpu code
generator names what a kernel computes by it. ``structural_key`` describes a whole graph for
the program cache.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from .node import Node
from .optable import is_commutative


class StructuralKeys:
    """Memoised structural digests (16 bytes) of nodes.

    Args:
        leaf: for a node that the caller treats as opaque (a buffer, a load in a kernel), a
            process-independent description that alone makes its key (its op and inputs are
            not read); None for the nodes whose key is computed from op, attrs and inputs.
    """

    def __init__(self, leaf: Callable[[Node], tuple | None] = lambda node: None):
        self._leaf = leaf
        self._keys: dict[Node, bytes] = {}
        self._leaves: dict[Node, tuple | None] = {}

    def __getitem__(self, node: Node) -> bytes:
        """The key of ``node``, computing those of its not yet seen inputs first (iteratively)."""
        stack = [node]
        while stack:
            top = stack[-1]
            if top in self._keys:
                stack.pop()
                continue
            missing = [i for i in self._inputs(top) if i not in self._keys]
            if missing:
                stack.extend(missing)
                continue
            self._keys[top] = self._digest(top)
            stack.pop()
        return self._keys[node]

    def _inputs(self, node: Node) -> tuple[Node, ...]:
        if node not in self._leaves:
            self._leaves[node] = self._leaf(node)
        return () if self._leaves[node] is not None else node.inputs

    def _digest(self, node: Node) -> bytes:
        stand_in = self._leaves[node]
        if stand_in is not None:
            return hashlib.blake2b(repr(stand_in).encode(), digest_size=16).digest()
        inputs = [self._keys[i] for i in node.inputs]
        if is_commutative(node):
            inputs.sort()
        text = repr((node.op, node.shape, node.dtype, node.attrs))
        h = hashlib.blake2b(text.encode(), digest_size=16)
        for key in inputs:
            h.update(key)
        return h.digest()


class GraphKey(tuple):
    """A graph's structural key: a tuple that hashes itself once. Program caches look a key up
    more than once per realization, and a step's graph has thousands of items."""

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = tuple.__hash__(self)
        return h


def structural_key(outputs: list[Node] | tuple[Node, ...]) -> tuple[tuple, list[Node]]:
    """(key, leaves): a hashable description of the graph in which each buffer leaf is replaced
    by its position in ``leaves`` (leaves in order of first appearance, inputs before users).

    The items are in ``toposort`` order, made in the same depth-first pass: a node is described
    when its last input is, and ``index`` doubles as the visited set (a node still on the stack
    is an ancestor of every node met meanwhile, so it cannot be met again in a DAG).
    """
    index: dict[Node, int] = {}
    leaves: list[Node] = []
    items: list[tuple] = []
    emit = items.append
    for root in outputs:
        if root in index:
            continue
        stack = [(root, iter(root.inputs))]
        while stack:
            node, inputs = stack[-1]
            for child in inputs:
                if child not in index:
                    stack.append((child, iter(child.inputs)))
                    break
            else:
                stack.pop()
                index[node] = len(items)
                ins = node.inputs
                n = len(ins)
                if n == 0:
                    if node.op == "buffer":
                        emit(("buffer", node.shape, node.dtype, len(leaves)))
                        leaves.append(node)
                        continue
                    positions: tuple = ()
                elif n == 1:
                    positions = (index[ins[0]],)
                elif n == 2:
                    positions = (index[ins[0]], index[ins[1]])
                else:
                    positions = tuple([index[x] for x in ins])
                emit((node.op, node.shape, node.dtype, node.attrs, positions))
    emit(tuple([index[o] for o in outputs]))
    return GraphKey(items), leaves
