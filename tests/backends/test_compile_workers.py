"""Compile worker processes: a program's new kernels compiled beside this process, each once."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fusegrad.backends.numba_cpu import cache, workers
from fusegrad.backends.numba_cpu.render import KernelSource

pytestmark = pytest.mark.numba


def _kernel(factor: int, body: str | None = None) -> KernelSource:
    name = f"k_worker_test_{uuid.uuid4().hex[:12]}"
    body = body or f"out0[i0] = in0[i0] * np.float32({factor}.5)"
    text = ("import numpy as np\nfrom numba import njit\n\n\n"
            "@njit(cache=True, error_model=\"numpy\", parallel=False)\n"
            f"def {name}(out0, in0):\n    for i0 in range(out0.shape[0]):\n        {body}\n")
    return KernelSource(name, text, name, hashlib.sha256(text.encode()).hexdigest(), False)


def _job(ks: KernelSource) -> workers.Job:
    return workers.Job(ks.name, ks.source, ks.function, ks.hash, ks.parallel,
                       ("float32", "float32"), str(cache.cache_dir()))


def _after_workers_took_the_rest(compile_here):
    """A compile_here that first waits until the workers have taken every other job, so the
    split between this process (the last job) and the workers (the others) does not depend on
    how fast they start."""
    def wait_then_compile(job):
        deadline = time.monotonic() + 120
        while workers._BOARD.jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        compile_here(job)
    return wait_then_compile


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_workers_compile_into_the_disk_cache_what_this_process_does_not_take(fresh_cache):
    kernels = [_kernel(i) for i in range(4)]
    by_hash = {ks.hash: ks for ks in kernels}
    here: list[str] = []

    def compile_here(job):
        here.append(job.hash)
        cache.load_kernel(by_hash[job.hash], job.dtypes)

    report = workers.compile_batch([_job(ks) for ks in kernels],
                                   _after_workers_took_the_rest(compile_here), 1)
    # this process takes from the back at once (unless a worker already running took all four)
    assert report.workers == 1 and here in ([kernels[-1].hash], []) and report.here == len(here)
    assert sorted([*here, *report.by_workers]) == sorted(ks.hash for ks in kernels)
    assert report.failed == {}
    assert all(cache.on_disk(ks) for ks in kernels)
    compiled, loaded = cache.STATS.kernels_compiled, cache.STATS.kernels_loaded
    x = np.arange(5, dtype=np.float32)
    for i, ks in enumerate(kernels):
        out = np.empty_like(x)
        cache.load_kernel(ks, ("float32", "float32"))(out, x)
        np.testing.assert_array_equal(out, x * np.float32(i + 0.5))
    # what the workers compiled is loaded here, not compiled again
    assert cache.STATS.kernels_compiled == compiled
    assert cache.STATS.kernels_loaded == loaded + 4 - len(here)


def test_a_kernel_a_worker_cannot_compile_is_reported_and_the_worker_goes_on(fresh_cache):
    bad = _kernel(0, body="out0[i0] = no_such_name")
    good = [_kernel(i) for i in (1, 2)]
    report = workers.compile_batch([_job(ks) for ks in (bad, *good, _kernel(3))],
                                   _after_workers_took_the_rest(lambda job: None), 1)
    assert list(report.failed) == [bad.hash]
    assert "no_such_name" in report.failed[bad.hash]
    assert {ks.hash for ks in good} <= set(report.by_workers)
    assert all(w.alive and w.proc.poll() is None for w in workers._WORKERS)
    # this process compiles it itself and raises Numba's error as it would have without workers
    with pytest.raises(Exception, match="no_such_name"):
        cache.load_kernel(bad, ("float32", "float32"))


def test_a_worker_that_died_is_replaced(fresh_cache):
    workers.compile_batch([_job(_kernel(i)) for i in range(2)],
                          _after_workers_took_the_rest(lambda job: None), 1)
    for w in workers._WORKERS:
        w.proc.kill()
        w.proc.wait()
    kernels = [_kernel(i) for i in range(3)]
    report = workers.compile_batch([_job(ks) for ks in kernels],
                                   _after_workers_took_the_rest(lambda job: None), 1)
    assert {ks.hash for ks in kernels[:2]} <= set(report.by_workers)
    assert report.failed == {} and report.workers == 1
    assert all(w.proc.poll() is None for w in workers._WORKERS)


def test_the_costliest_kernels_are_compiled_first():
    short, long_ = _kernel(0), _kernel(1, body="out0[i0] = in0[i0]\n" + "        x = 1\n" * 20)
    parallel = workers.Job(**{**vars(_job(short)), "parallel": True})
    assert workers.cost(_job(long_)) > workers.cost(parallel) > workers.cost(_job(short))


def test_the_number_of_workers(monkeypatch):
    monkeypatch.setenv("FUSEGRAD_COMPILE_WORKERS", "3")
    assert workers.compile_workers() == 3
    monkeypatch.setenv("FUSEGRAD_COMPILE_WORKERS", "0")
    assert workers.compile_workers() == 0
    monkeypatch.setenv("FUSEGRAD_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="FUSEGRAD_COMPILE_WORKERS must be a whole number"):
        workers.compile_workers()
    monkeypatch.delenv("FUSEGRAD_COMPILE_WORKERS")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert workers.compile_workers() == min(workers.MAX_WORKERS, cpus - 1)


# A script without an ``if __name__ == "__main__"`` guard: the workers must not run it again.
SCRIPT = """
import sys
import fusegrad as fg
from fusegrad.backends.numba_cpu import cache
print("script ran", file=sys.stderr)
fg.manual_seed(0)
m = fg.nn.Sequential(fg.nn.Linear(4, 8), fg.nn.Tanh(), fg.nn.Linear(8, 2))
opt = fg.optim.Adam(m.parameters())
for _ in range(2):
    opt.zero_grad()
    loss = m(fg.randn(3, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    print(repr(loss.item()))
s = cache.STATS
print("compiled", s.kernels_compiled + s.kernels_by_workers, "by workers", s.kernels_by_workers)
"""


def test_a_training_script_compiled_with_a_worker_runs_once_and_computes_the_same(tmp_path):
    runs = {}
    for count in ("1", "0"):
        env = {k: v for k, v in os.environ.items() if k != "FUSEGRAD_QUIET"}
        env.update(FUSEGRAD_CACHE_DIR=str(tmp_path / count), FUSEGRAD_COMPILE_WORKERS=count)
        runs[count] = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                                     text=True, timeout=600)
        assert runs[count].returncode == 0, runs[count].stderr
    with_worker, alone = runs["1"], runs["0"]
    assert with_worker.stderr.count("script ran") == 1
    assert "kernels in 2 processes... (first run only" in with_worker.stderr
    *losses, counts = with_worker.stdout.splitlines()
    *losses_alone, counts_alone = alone.stdout.splitlines()
    assert losses == losses_alone   # the same kernels, bit for bit
    assert counts.split()[:2] == counts_alone.split()[:2]   # each kernel compiled once
    assert counts_alone.endswith("by workers 0")
