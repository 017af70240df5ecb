"""Compiling a program's new kernels in worker processes, beside this one.

Numba compiles one function at a time per process (a global compiler lock), at 0.1-0.5 s per
kernel, so a cold first step of a model with dozens of kernels spends seconds on one core. When a
program has at least ``MIN_KERNELS`` kernels that neither memory nor the disk cache holds, they go
on a board, the costliest first (``cost``). ``compile_workers()`` worker processes take from its
front whenever they are free, this process from its back, so each kernel is compiled once and
nobody waits for a worker that is still starting: this process compiles the cheap kernels
while the workers start, and they the costly ones. A worker compiles into the disk cache; this process then loads
what the workers compiled (a few ms each) through the usual ``cache.load_kernel``.

The workers are plain subprocesses (``python -m fusegrad.backends.numba_cpu.workers``) fed JSON
lines, not ``multiprocessing`` children, which would import the user's main script again. They
start when first needed, stay up for later programs, and stop when this process exits. A worker
that fails or dies only costs time: a kernel it did not compile is compiled here, with the usual
errors. Without a writable disk cache, or with ``FUSEGRAD_COMPILE_WORKERS=0``, everything is
compiled in this process.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import cache
from .progress import CompileProgress
from .render import KernelSource

MIN_KERNELS = 4   # fewer new kernels compile in about a second: not worth a worker's start-up
MAX_WORKERS = 8


def compile_workers() -> int:
    """Worker processes for compiling: ``FUSEGRAD_COMPILE_WORKERS``, else one less than the CPUs
    this process may run on (at most ``MAX_WORKERS``)."""
    text = os.environ.get("FUSEGRAD_COMPILE_WORKERS", "").strip()
    if text:
        try:
            return max(0, int(text))
        except ValueError:
            raise ValueError(f"FUSEGRAD_COMPILE_WORKERS must be a whole number, got {text!r}") \
                from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(MAX_WORKERS, cpus - 1)


@dataclass(frozen=True)
class Job:
    """One kernel to compile: what ``cache.load_kernel`` needs, in plain values."""

    name: str
    source: str
    function: str
    hash: str
    parallel: bool
    dtypes: tuple[str, ...]
    cache_dir: str

    def message(self) -> str:
        return json.dumps({"name": self.name, "source": self.source, "function": self.function,
                           "hash": self.hash, "parallel": self.parallel,
                           "dtypes": list(self.dtypes), "cache_dir": self.cache_dir})


@dataclass
class BatchReport:
    """What one ``compile_batch`` did.

    Attributes:
        here: kernels compiled by this process.
        by_workers: kernels the workers compiled, and the seconds each took there.
        failed: kernels a worker took but did not compile (error text): loaded or compiled here.
        seconds: wall time of the batch.
        workers: worker processes that were running.
    """

    here: int = 0
    by_workers: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0


class _Board:
    """The kernels left to compile: workers take from the front, this process from the back."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: deque[Job] = deque()
        self.in_flight = 0
        self.report = BatchReport()

    def post(self, jobs: list[Job], report: BatchReport) -> None:
        with self.cond:
            self.jobs.extend(jobs)
            self.report = report
            self.cond.notify_all()

    def take_for_worker(self, worker: _Worker) -> tuple[Job, BatchReport] | None:
        """The next job for ``worker``, waiting for one; None once the worker is retired."""
        with self.cond:
            while worker.alive and not self.jobs:
                self.cond.wait()
            if not worker.alive:
                return None
            self.in_flight += 1
            return self.jobs.popleft(), self.report

    def retire(self, worker: _Worker) -> None:
        """Mark ``worker`` dead: its thread stops taking jobs."""
        with self.cond:
            worker.alive = False
            self.cond.notify_all()

    def take_here(self) -> Job | None:
        with self.cond:
            return self.jobs.pop() if self.jobs else None

    def finished(self, job: Job, report: BatchReport, reply: dict) -> None:
        with self.cond:
            if reply.get("ok"):
                report.by_workers[job.hash] = float(reply.get("seconds", 0.0))
            else:
                report.failed[job.hash] = str(reply.get("compile_error") or reply.get("error")
                                              or "the worker stopped")
            self.in_flight -= 1
            self.cond.notify_all()

    def wait_idle(self) -> None:
        with self.cond:
            while self.in_flight:
                self.cond.wait()


class _Worker:
    """One worker process and the thread in this process that feeds it from the board."""

    def __init__(self, board: _Board, index: int) -> None:
        env = dict(os.environ, FUSEGRAD_QUIET="1", FUSEGRAD_COMPILE_WORKERS="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        self.alive = True
        self.thread = threading.Thread(target=self._serve, args=(board,), daemon=True,
                                       name=f"fusegrad-compile-worker-{index}")
        self.thread.start()

    def _serve(self, board: _Board) -> None:
        try:
            if self.proc.stdout.readline().strip() != "ready":
                raise EOFError("the worker did not start")
        except (OSError, ValueError, EOFError):
            self.alive = False
            return
        while True:
            taken = board.take_for_worker(self)
            if taken is None:
                return
            job, report = taken
            try:
                self.proc.stdin.write(job.message() + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
                reply = json.loads(line) if line else {"ok": False, "error": "the worker exited"}
            except (OSError, ValueError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            board.finished(job, report, reply)
            if not line_ok(reply):
                self.alive = False
                self.stop()
                return

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def line_ok(reply: dict) -> bool:
    """Whether the worker answered as a working worker does (a compile error is an answer)."""
    return bool(reply.get("ok")) or "compile_error" in reply


_BOARD = _Board()
_WORKERS: list[_Worker] = []
_LOCK = threading.Lock()


def _running(count: int) -> list[_Worker]:
    """The live workers, started up to ``count`` (those whose process ended are replaced)."""
    with _LOCK:
        for w in _WORKERS:
            if w.alive and w.proc.poll() is not None:   # the process ended (killed, crashed)
                _BOARD.retire(w)
        _WORKERS[:] = [w for w in _WORKERS if w.alive]
        while len(_WORKERS) < count:
            _WORKERS.append(_Worker(_BOARD, len(_WORKERS)))
        return list(_WORKERS)


def _after_fork_in_child() -> None:
    """A forked child has none of the feeding threads and must not stop its parent's workers."""
    global _BOARD, _LOCK
    _WORKERS.clear()
    _BOARD, _LOCK = _Board(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def shutdown() -> None:
    """Stop every worker process."""
    with _LOCK:
        workers, _WORKERS[:] = list(_WORKERS), []
    for w in workers:
        _BOARD.retire(w)
        w.stop()


def compile_batch(jobs: list[Job], compile_here: Callable[[Job], None], workers: int
                  ) -> BatchReport:
    """Compile ``jobs`` into the disk cache with up to ``workers`` worker processes taking from
    the front and this process (``compile_here``) from the back; returns once none is left or
    in progress."""
    report = BatchReport()
    t0 = time.perf_counter()
    report.workers = len(_running(workers)) if workers > 0 else 0
    _BOARD.post(list(jobs), report)
    while (job := _BOARD.take_here()) is not None:
        compile_here(job)
        report.here += 1
    _BOARD.wait_idle()
    report.seconds = time.perf_counter() - t0
    return report


def cost(job: Job) -> int:
    """A kernel's compile time, roughly: its lines of code, three times over with ``prange``
    (NUMBA-NOTES: parallel=True triples compile time)."""
    lines = sum(1 for line in job.source.splitlines()
                if line.strip() and not line.lstrip().startswith("#"))
    return lines * (3 if job.parallel else 1)


def compile_ahead(kernels: list[tuple[KernelSource, tuple[str, ...]]],
                  progress: CompileProgress) -> BatchReport | None:
    """Compile those of ``kernels`` (source, argument dtypes; none of them in memory) that the
    disk cache lacks, with worker processes helping, so that loading them afterwards is quick.

    Returns the batch's report, or None when everything is left to ``load_kernel`` in this
    process: fewer than ``MIN_KERNELS`` to compile, no workers, no writable disk cache, or
    inside ``cache.fresh_kernels()``.
    """
    workers = compile_workers()
    if workers <= 0 or len(kernels) < MIN_KERNELS or not cache.cache_enabled() \
            or cache._FRESH[0]:
        return None
    todo = {(ks.hash, dtypes): (ks, dtypes) for ks, dtypes in kernels if not cache.on_disk(ks)}
    if len(todo) < MIN_KERNELS or cache.folder_access() != "write":
        return None
    folder = str(cache.cache_dir())
    jobs = sorted((Job(ks.name, ks.source, ks.function, ks.hash, ks.parallel, dtypes, folder)
                   for ks, dtypes in todo.values()), key=cost, reverse=True)
    workers = min(workers, len(jobs) - 1)
    progress.starting(len(jobs), 1 + workers)

    def compile_here(job: Job) -> None:
        cache.load_kernel(*todo[(job.hash, job.dtypes)])

    report = compile_batch(jobs, compile_here, workers)
    cache.STATS.kernels_by_workers += len(report.by_workers)
    cache.STATS.worker_seconds += sum(report.by_workers.values())
    return report


# ---------------------------------------------------------------------------- the worker side
def _compile_job(request: dict) -> dict:
    os.environ["FUSEGRAD_CACHE_DIR"] = request["cache_dir"]
    ks = KernelSource(request["name"], request["source"], request["function"], request["hash"],
                      bool(request["parallel"]))
    t0 = time.perf_counter()
    try:
        cache.load_kernel(ks, tuple(request["dtypes"]))
    except Exception as exc:  # noqa: BLE001 - reported; the main process compiles it again
        return {"ok": False, "compile_error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "seconds": time.perf_counter() - t0}


def main() -> None:
    """The worker loop: one JSON request per stdin line, one JSON reply per line."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)   # a stray print (a Numba debug setting) must not garble the replies
    replies.write("ready\n")
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(_compile_job(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
