"""The structural key of a graph (``ir.key.structural_key``): its items in ``toposort`` order,
each input by its position, buffers by their order of first appearance."""
from __future__ import annotations

import numpy as np

from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.graph import toposort
from fusegrad.ir.key import structural_key


def _described(outputs):
    """The key as its docstring defines it, from ``toposort``."""
    index, leaves, items = {}, [], []
    for node in toposort(outputs):
        index[node] = len(items)
        if node.op == "buffer":
            items.append(("buffer", node.shape, node.dtype, len(leaves)))
            leaves.append(node)
        else:
            items.append((node.op, node.shape, node.dtype, node.attrs,
                          tuple(index[i] for i in node.inputs)))
    items.append(tuple(index[o] for o in outputs))
    return tuple(items), leaves


def _leaf(shape=(2, 3)):
    return ops.buffer(Buffer(shape, "float32", np.zeros(int(np.prod(shape)), np.float32)))


def _graph(x, y, z):
    s = ops.binary("add", x, y)
    shared = ops.unary("exp", s)
    m = ops.binary("mul", shared, shared)
    r = ops.reduce("sum", ops.binary("sub", m, x), (1,))
    w = ops.where(ops.binary("le", z, x), m, shared)
    return [r, w, shared, r, ops.expand(r, (2, 3))]


def test_the_key_is_the_toposort_description():
    x, y, z = _leaf(), _leaf(), _leaf()
    outputs = _graph(x, y, z)
    key, leaves = structural_key(outputs)
    want, want_leaves = _described(outputs)
    assert tuple(key) == want
    assert leaves == want_leaves == [x, y, z]


def test_equal_structures_over_other_buffers_share_a_key_and_sharing_counts():
    a = structural_key(_graph(_leaf(), _leaf(), _leaf()))[0]
    b = structural_key(_graph(_leaf(), _leaf(), _leaf()))[0]
    assert a == b and hash(a) == hash(b)
    x = _leaf()
    same_leaf_twice = structural_key(_graph(x, x, _leaf()))[0]
    assert same_leaf_twice != a
    assert structural_key([ops.binary("mul", x, x)])[0] != \
        structural_key([ops.binary("mul", x, _leaf())])[0]
