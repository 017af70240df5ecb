"""Suite-wide set-up: the kernel cache folder, the ``numba`` marker and ``import parity``.

The cache folder is set before fusegrad is imported, so a second run loads every Numba kernel
from disk instead of compiling it again.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
os.environ.setdefault("FUSEGRAD_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".fusegrad-cache"))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # shared helpers (``from parity import ...``)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "numba: runs on the numba_cpu backend (compiles kernels)")
