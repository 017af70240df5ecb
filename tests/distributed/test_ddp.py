"""Data-parallel training over MPI: two ranks (``mpiexec -n 2``) against one process.

Each test launches ``ddp_worker.py`` under MPICH's ``mpiexec`` (from the ``mpich`` wheel of the
test extra) and reads what rank 0 prints.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="MPI for Python is not installed (pip install 'fusegrad[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install mpich)", allow_module_level=True)
WORKER = Path(__file__).with_name("ddp_worker.py")
RTOL = 1e-5


def _launch(*jobs: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEGRAD_QUIET="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(WORKER), *jobs], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _results(*jobs: str) -> dict[str, dict]:
    out = _launch(*jobs)
    assert out.returncode == 0, out.stdout + out.stderr
    results = {r["job"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert sorted(results) == sorted(jobs)
    return results


def test_two_ranks_on_halves_train_as_one_process_on_the_whole_batch():
    """The guide's MLP and a CNN, 20 SGD steps with momentum, uncompiled and compiled (the
    gradient all-reduce inside the compiled program): losses and parameters after every step
    equal one process's on the whole batch."""
    jobs = [f"train:{kind}:{how}" for kind in ("mlp", "cnn") for how in ("eager", "compiled")]
    for job, r in _results(*jobs, "train:unused:eager").items():
        assert r["world"] == 2
        assert r["loss"] <= RTOL and r["params"] <= RTOL and r["ranks"] == 0, (job, r)
        if job.endswith("compiled"):  # one bucket: one all-reduce in the one replayed program
            assert r["allreduces"] == 1 and r["replays"] == 19, (job, r)
        if job.startswith("train:unused"):  # no rank gave it a gradient: None, as in one process
            assert r["unused_grad_none"] is True


def test_batchnorm_replicas_stay_equal():
    """BatchNorm normalises with each rank's own batch (so not as one process would); each
    forward first takes rank 0's buffers, an all-reduce inside the compiled program too."""
    for job, r in _results("train:bn:eager", "train:bn:compiled").items():
        assert r["ranks"] == 0, (job, r)
        if job.endswith("compiled"):  # buffers: float and int64 groups; gradients: one bucket
            assert r["allreduces"] == 3 and r["replays"] == 19, (job, r)


def test_no_sync_accumulation_equals_the_bigger_batch():
    """Inside the compiled step, and with a compiled micro-step called inside and outside
    ``no_sync()`` (the sync decision is part of what its replays check)."""
    jobs = ("nosync:mlp:eager", "nosync:mlp:compiled", "flip:mlp:compiled")
    for job, r in _results(*jobs).items():
        assert r["loss"] <= RTOL and r["params"] <= RTOL and r["ranks"] == 0, (job, r)


def test_a_failing_rank_ends_the_job_instead_of_hanging():
    out = _launch("fail", timeout=120)
    assert out.returncode != 0
    assert "rank 1 fails on purpose" in out.stderr
    assert "aborting the job" in out.stderr
