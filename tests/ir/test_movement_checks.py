"""The movement ops' remembered checks (``ir/ops.py``): a repeated reshape, permute or expand
skips its generic checks, and still builds the node the checks would, and still refuses what
they refuse."""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad.errors import ShapeError
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer


def _leaf(shape: tuple[int, ...]):
    return ops.buffer(Buffer(shape, "float32", np.zeros(int(np.prod(shape)), np.float32)))


def test_remembered_checks_give_the_same_nodes_with_plain_ints():
    x = _leaf((2, 3, 4))
    for _ in range(2):  # the second round is answered from the table
        p = ops.permute(x, (2, 0, 1))
        assert p.shape == (4, 2, 3) and p.attrs == ((2, 0, 1),)
        assert ops.permute(x, (0, 1, 2)) is x
        r = ops.reshape(x, (6, 4))
        assert r.shape == (6, 4) and ops.reshape(x, (2, 3, 4)) is x
        e = ops.expand(_leaf((1, 3)), (5, 3))
        assert e.shape == (5, 3)
    # numpy integers hash like the ints they equal: the node still holds plain ints
    q = ops.permute(x, (np.int64(2), np.int64(0), np.int64(1)))
    assert q is p and all(type(d) is int for d in q.attrs[0])
    s = ops.reshape(x, (np.int64(6), np.int64(4)))
    assert s is r and all(type(d) is int for d in s.shape)


def test_remembered_checks_still_refuse_bad_arguments():
    x = _leaf((2, 3))
    ops.permute(x, (1, 0))
    ops.reshape(x, (3, 2))
    ops.expand(_leaf((1, 3)), (4, 3))
    for _ in range(2):
        with pytest.raises(ShapeError, match="not a permutation"):
            ops.permute(x, (1, 1))
        with pytest.raises(ShapeError, match="cannot view shape"):
            ops.reshape(x, (4, 2))
        with pytest.raises(ShapeError, match="cannot expand"):
            ops.expand(_leaf((2, 3)), (4, 3))
    # the same arguments on an input of another shape are checked for that shape
    with pytest.raises(ShapeError, match="cannot view shape"):
        ops.reshape(_leaf((7,)), (3, 2))
