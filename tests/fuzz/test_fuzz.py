"""Differential fuzzing: random Tensor programs on fusegrad (numba_cpu in four realization
modes, and the interpreter) against PyTorch in float64, forward values and gradients.

The bounded run is part of the default suite and derandomized, so it is the same every run
(and its kernels come from the disk cache after the first). The long run is
``python -m pytest -m fuzz tests/fuzz`` (``FUSEGRAD_FUZZ_EXAMPLES`` graphs, 10,000 by default;
``scripts/fuzz.py`` prints the figures). A failure shrinks to a minimal program, which the
error prints as a function of ``lib`` that runs on both libraries, and Hypothesis prints the
``@reproduce_failure`` decorator that replays it.
"""
from __future__ import annotations

import os

import pytest
from differential import checker
from graphgen import Program, programs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOUNDED_EXAMPLES = 60
LONG_EXAMPLES = int(os.environ.get("FUSEGRAD_FUZZ_EXAMPLES", "10000"))
SEEDS = st.integers(0, 2**32 - 2)
SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]
check = checker()


@pytest.mark.numba
@settings(max_examples=BOUNDED_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=SLOW_IS_FINE, print_blob=True)
@given(program=programs(max_steps=6), seed=SEEDS)
def test_bounded_fuzz(program: Program, seed: int) -> None:
    check(program, seed)


@pytest.mark.numba
@pytest.mark.fuzz
@settings(max_examples=LONG_EXAMPLES, deadline=None, database=None,
          suppress_health_check=SLOW_IS_FINE, print_blob=True)
@given(program=programs(max_steps=10), seed=SEEDS)
def test_long_fuzz(program: Program, seed: int) -> None:
    check(program, seed)
