"""``tests/cuda`` in a process of their own, on Numba's CUDA simulator (see ``conftest.py``).

The simulator is a switch for the whole process: run beside the other tests, it would make CUDA
available to them too. Here one pytest process runs every CUDA test and this test reports its
failures; ``FUSEGRAD_CUDA_TESTS=sim python -m pytest tests/cuda`` runs them directly.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(bool(os.environ.get("FUSEGRAD_CUDA_TESTS")),
                    reason="FUSEGRAD_CUDA_TESTS is set: tests/cuda are collected in this process")
def test_the_cuda_tests_pass_on_the_simulator_in_a_process_of_their_own():
    env = dict(os.environ, FUSEGRAD_CUDA_TESTS="sim")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
                          "-rfEs", "tests/cuda"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1800)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert " passed" in summary and " failed" not in summary, summary
