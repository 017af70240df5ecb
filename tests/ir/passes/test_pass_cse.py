"""Common-subexpression elimination: canonical operand order of commutative ops."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fusegrad.ir import ops
from fusegrad.ir.graph import Graph
from fusegrad.ir.optable import TABLE
from fusegrad.ir.passes import common_subexpression_elimination

_SAMPLES = {
    "float32": lambda rng: rng.standard_normal((2, 3)).astype(np.float32),
    "int64": lambda rng: rng.integers(-5, 5, (2, 3)),
    "bool": lambda rng: rng.random((2, 3)) < 0.5,
}
_PAIRS = [(op, dtype) for op, spec in sorted(TABLE.items()) if spec.arity == 2
          for dtype in _SAMPLES if spec.commutes(dtype)]


def test_commutative_pairs_come_from_the_table():
    assert ("add", "float32") in _PAIRS and ("maximum", "int64") in _PAIRS
    assert ("maximum", "float32") not in _PAIRS and ("minimum", "float32") not in _PAIRS


@pytest.mark.parametrize("op,dtype", _PAIRS)
def test_mirrored_commutative_ops_merge(op, dtype, leaf, rng, same_values):
    x, y = leaf(_SAMPLES[dtype](rng)), leaf(_SAMPLES[dtype](rng))
    graph = Graph((ops.binary(op, x, y), ops.binary(op, y, x)))
    merged = common_subexpression_elimination(graph)
    assert merged.outputs[0] is merged.outputs[1]
    assert len(merged) == len(graph) - 1
    same_values(graph, merged)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_float_maximum_and_minimum_keep_their_operand_order(op, leaf):
    """Swapping would change which signed zero comes out: maximum(0.0, -0.0) is 0.0."""
    x = leaf(np.array([0.0, -0.0, np.nan], np.float32))
    y = leaf(np.array([-0.0, 0.0, 1.0], np.float32))
    graph = Graph((ops.binary(op, x, y), ops.binary(op, y, x)))
    assert common_subexpression_elimination(graph).outputs == graph.outputs


def test_merging_reaches_users_of_mirrored_nodes(f32):
    x, y, z = f32(4), f32(4), f32(4)
    a = ops.binary("mul", ops.binary("add", x, y), z)
    b = ops.binary("mul", z, ops.binary("add", y, x))
    merged = common_subexpression_elimination(Graph((a, b)))
    assert merged.outputs[0] is merged.outputs[1]
    assert len(merged) == 5


def test_non_commutative_ops_keep_their_order(f32):
    x, y = f32(3), f32(3)
    graph = Graph((ops.binary("sub", x, y), ops.binary("sub", y, x)))
    assert common_subexpression_elimination(graph).outputs == graph.outputs


def test_order_depends_on_structure_not_on_creation_order(f32):
    def canonical(create_x_first: bool) -> list[list[int]]:
        if create_x_first:
            x, y = f32(3), f32(3)
        else:
            y, x = f32(3), f32(3)
        out = ops.binary("add", y, x)
        order = common_subexpression_elimination(Graph((out,))).nodes
        return [[order.index(i) for i in n.inputs] for n in order]

    assert canonical(True) == canonical(False)


_KEYS_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fusegrad.ir import ops
    from fusegrad.ir.buffer import Buffer
    from fusegrad.ir.graph import Graph
    from fusegrad.ir.passes.cse import graph_keys
    x = ops.buffer(Buffer.from_array(np.zeros(3, np.float32)))
    y = ops.buffer(Buffer.from_array(np.ones(3, np.float32)))
    out = ops.binary("mul", ops.unary("exp", x), ops.binary("add", y, ops.const(2.0, (3,), "float32")))
    print(graph_keys(Graph((out,)))[out].hex())
""")


def test_structural_keys_are_the_same_in_every_process():
    keys = {subprocess.run([sys.executable, "-c", _KEYS_SCRIPT], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert len(keys) == 1
