"""The CUDA tests run on Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), unless
``FUSEGRAD_CUDA_TESTS=gpu`` (``scripts/gpu_check.sh``) asks for the real GPU.

The simulator must be chosen before ``numba.cuda`` is first imported; other test modules may
have imported ``numba`` already, so its configuration is read again here, ``numba.cuda`` is
imported, and the environment is put back for the subprocesses other tests start. Every test here is
skipped, with the reason, where the CUDA target cannot run at all.
"""
from __future__ import annotations

import os

import pytest

if os.environ.get("FUSEGRAD_CUDA_TESTS", "sim") != "gpu":
    previous = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import numba.core.config

    numba.core.config.reload_config()
    import numba.cuda  # noqa: F401 - the simulator is chosen now, for this process

    # processes other tests start (the CLI, MPI ranks) keep the environment they had
    if previous is None:
        del os.environ["NUMBA_ENABLE_CUDASIM"]
    else:
        os.environ["NUMBA_ENABLE_CUDASIM"] = previous

import fusegrad  # noqa: E402
from fusegrad.ir.device import cuda_status  # noqa: E402

cuda_status.cache_clear()


def pytest_collection_modifyitems(config, items) -> None:
    if fusegrad.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"CUDA not available: {fusegrad.cuda.unavailable_reason()}")
    for item in items:
        if "tests/cuda/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
