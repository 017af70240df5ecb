"""Suite-wide set-up: the kernel cache folder, the ``numba`` and ``fuzz`` markers and
``import parity``.

The cache folder is set before fusegrad is imported, so a second run loads every Numba kernel
from disk instead of compiling it again.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
os.environ.setdefault("FUSEGRAD_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".fusegrad-cache"))
# the suite runs one pytest worker per CPU already: compile worker processes would only compete
# with them (tests/backends/test_compile_workers.py turns them on where it tests them)
os.environ.setdefault("FUSEGRAD_COMPILE_WORKERS", "0")
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # shared helpers (``from parity import ...``)

# tests/cuda switch Numba to its CUDA simulator for the whole process they run in (CUDA would then
# be available to every other test there), so they run in a process of their own
# (test_cuda_suite.py), which sets FUSEGRAD_CUDA_TESTS; scripts/gpu_check.sh sets it too
collect_ignore = [] if os.environ.get("FUSEGRAD_CUDA_TESTS") else ["cuda"]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "numba: runs on the numba_cpu backend (compiles kernels)")
    config.addinivalue_line("markers", "fuzz: the long differential fuzzing run (pytest -m fuzz)")


def pytest_collection_modifyitems(config, items) -> None:
    """The long fuzzing run takes hours; it runs only when ``-m`` names the ``fuzz`` marker."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long fuzzing run: python -m pytest -m fuzz")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
