"""Every case of the op-parity tables on the GPU (forward and gradient) against the CPU
backend. Shapes are the tables' own (tiny): the simulator runs each thread in Python."""
from __future__ import annotations

import pytest
from cases import check_gpu_equals_cpu, load_cases

CASES = load_cases("tracer/test_ops_parity.py")


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_op_on_gpu_equals_cpu(c):
    check_gpu_equals_cpu(c)
