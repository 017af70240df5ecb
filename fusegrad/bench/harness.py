"""``fusegrad bench``: the zoo's training steps in fusegrad beside PyTorch, in one run.

For each workload the harness first checks correctness: fusegrad's losses over the first
steps against PyTorch's from the same weights (or, without torch, against fusegrad's numpy
interpreter). Then it starts one worker process per variant (fusegrad compiled, fusegrad
uncompiled, PyTorch eager, optionally ``torch.compile``) and interleaves them: each round runs
a few steps of every variant in turn, so machine noise hits all of them alike. Time to first
step is measured in fresh processes, with an empty kernel cache (cold) and the warm one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import zoo

NOISY = 0.1   # IQR / median above which a timing row is flagged as noisy


@dataclass
class Settings:
    """What to run and how long."""

    workloads: list[str]
    warmup: int = 5           # steps per variant before timing
    round_warmup: int = 2     # untimed steps at the start of each round (thread pools wake up)
    rounds: int = 5           # interleaved rounds
    steps: int = 10           # timed steps per variant per round
    check_steps: int = 3
    threads: int | None = None
    torch_compile: bool = False
    inference: bool = False
    first_step: bool = True   # cold and warm time to first step (fresh processes)
    small: bool = False       # test-sized shapes of the same models
    seed: int = 0
    # idle seconds before each variant's turn: a worker's BLAS and OpenMP threads spin for up
    # to ~0.1 s after its last step, on the cores the next worker's turn then runs on (with
    # no gap, mlp_b64 measured 7.9 ms uncompiled and 7.0 ms in torch; with 0.3 s, 3.2 and 1.8)
    gap: float = 0.2
    # torch.set_flush_denormal(True) in torch's workers: fusegrad's programs flush denormals by
    # default; torch does not, and attn's torch step grew from 225 to 1637 ms over 60 steps as
    # Adam's state went denormal (240 ms throughout with the flag)
    torch_flush_denormal: bool = False


@dataclass
class Timing:
    """Per-step wall times of one variant, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISY * self.median

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median * 1e3, "iqr_ms": self.iqr * 1e3,
                "min_ms": min(self.samples) * 1e3, "max_ms": max(self.samples) * 1e3,
                "samples": len(self.samples), "noisy": self.noisy}


@dataclass
class VariantResult:
    step: Timing | None = None
    inference: Timing | None = None
    first_step_cold_s: float | None = None
    first_step_warm_s: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)   # peak RSS, kernels, externs, flops
    error: str | None = None


@dataclass
class WorkloadResult:
    name: str
    check_against: str                 # "torch" or "interpreter"
    check_passed: bool
    check_detail: str
    losses: dict[str, list[float]]
    variants: dict[str, VariantResult] = field(default_factory=dict)

    def speedup(self, variant: str, baseline: str = "torch_eager") -> float | None:
        """How many times faster ``variant``'s training step is than ``baseline``'s."""
        a, b = self.variants.get(variant), self.variants.get(baseline)
        if a is None or b is None or a.step is None or b.step is None:
            return None
        return b.step.median / a.step.median


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def worker_env(settings: Settings, cache_dir: str | None = None) -> dict[str, str]:
    """The environment of a worker: the same thread count for every library when asked."""
    env = dict(os.environ)
    if settings.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS"):
            env[var] = str(settings.threads)
    if cache_dir is not None:
        env["FUSEGRAD_CACHE_DIR"] = cache_dir
    return env


class Worker:
    """A worker process (``fusegrad.bench.worker``) and its command channel."""

    def __init__(self, variant: str, workload: str, settings: Settings,
                 cache_dir: str | None = None, **setup: Any):
        self.variant = variant
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fusegrad.bench.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=worker_env(settings, cache_dir))
        self.call("setup", variant=variant, workload=workload, small=settings.small,
                  seed=settings.seed, threads=settings.threads,
                  flush_denormal=settings.torch_flush_denormal, **setup)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.variant} worker exited (code {self.proc.wait()}) "
                               f"during {cmd!r}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.variant}: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


@contextlib.contextmanager
def workers(make: dict[str, Any], errors: dict[str, str]
            ) -> Iterator[dict[str, Worker]]:
    """Start a Worker per ``variant -> zero-argument factory`` and close them all after; a
    variant that fails to start (``torch.compile`` without a compiler, say) is left out, with
    its error in ``errors``. The first variant (the reference) must start."""
    started: dict[str, Worker] = {}
    try:
        for i, (variant, factory) in enumerate(make.items()):
            try:
                started[variant] = factory()
            except RuntimeError as e:
                if i == 0:
                    raise
                errors[variant] = str(e)
        yield started
    finally:
        for w in started.values():
            w.close()


def _close(got: list[float], want: list[float], float64: bool) -> tuple[bool, str]:
    """Losses agree: the first step (same weights, same batch) to float rounding; later steps
    looser, since a step's update amplifies rounding differences (Adam and RMSprop divide by
    the square root of tiny second moments at first)."""
    first, later = (1e-9, 1e-6) if float64 else (1e-4, 1e-2)
    for i, (a, b) in enumerate(zip(got, want)):
        tol = first if i == 0 else later
        if not abs(a - b) <= tol * max(abs(b), 1e-6):
            return False, f"step {i + 1}: loss {a:.7g} vs {b:.7g} (rtol {tol:g})"
    if len(got) != len(want):
        return False, f"{len(got)} losses vs {len(want)}"
    return True, f"{len(got)} steps within rtol {first:g} (first) / {later:g} (later)"


def run_workload(name: str, settings: Settings, progress: Any = None) -> WorkloadResult:
    """Check and time one workload in every variant."""
    variants = ["fusegrad_compiled", "fusegrad_eager"]
    with_torch = torch_available()
    if with_torch:
        variants.append("torch_eager")
        if settings.torch_compile:
            variants.append("torch_compile")
    float64 = name == "lstmcell_unrolled"
    with tempfile.TemporaryDirectory(prefix="fusegrad-bench-") as tmp:
        weights = str(Path(tmp) / "weights.npz")
        reference = "torch_eager" if with_torch else "fusegrad_interpreter"
        make: dict[str, Any] = {}
        # the reference saves its initial weights; every other variant starts from them
        make[reference] = lambda: Worker(reference, name, settings, save_weights=weights)
        for v in variants:
            if v != reference:
                make[v] = lambda v=v: Worker(v, name, settings, load_weights=weights)
        errors: dict[str, str] = {}
        with workers(make, errors) as live:
            losses = {v: w.call("steps", n=settings.check_steps)["losses"]
                      for v, w in live.items()}
            checks = [_close(losses[v], losses[reference], float64)
                      for v in live if v.startswith("fusegrad") and v != reference]
            checks += [(False, f"{v}: {e}") for v, e in errors.items() if v.startswith("fusegrad")]
            passed = all(ok for ok, _ in checks)
            detail = "; ".join(msg for ok, msg in checks if not ok) or checks[0][1]
            result = WorkloadResult(name, "torch" if with_torch else "interpreter", passed,
                                    detail, losses)
            timed = [v for v in variants if v in live]
            for v in timed:
                result.variants[v] = VariantResult()
            for v, error in errors.items():
                result.variants[v] = VariantResult(error=error)
            if passed:
                _time(live, timed, settings, result, progress)
        if passed and settings.first_step:
            _first_steps(name, timed, settings, result, weights_dir=tmp)
    return result


def _time(live: dict[str, Worker], timed: list[str], settings: Settings,
          result: WorkloadResult, progress: Any) -> None:
    for v in timed:
        live[v].call("steps", n=settings.warmup)
    samples: dict[str, list[float]] = {v: [] for v in timed}
    infer: dict[str, list[float]] = {v: [] for v in timed}
    for _ in range(settings.rounds):
        for v in timed:   # interleaved: every variant runs in every round, in turn
            time.sleep(settings.gap)
            if settings.round_warmup:
                live[v].call("steps", n=settings.round_warmup)
            samples[v] += live[v].call("steps", n=settings.steps)["times"]
            if settings.inference:
                infer[v] += live[v].call("infer", n=settings.steps)["times"]
        if progress is not None:
            progress.update(1)
    for v in timed:
        r = result.variants[v]
        r.step = Timing(samples[v])
        r.inference = Timing(infer[v]) if infer[v] else None
        r.facts = live[v].call("info")


def _first_steps(name: str, timed: list[str], settings: Settings, result: WorkloadResult,
                 weights_dir: str) -> None:
    """Seconds from starting a fresh process to its first finished step: with an empty
    kernel cache (cold: the compiled step, which the uncompiled one shares its kernels with) and
    with the cache the timed run filled (warm, every variant)."""
    for v in timed:
        r = result.variants[v]
        try:
            if v == "fusegrad_compiled":
                with tempfile.TemporaryDirectory(prefix="fusegrad-cold-", dir=weights_dir) as d:
                    r.first_step_cold_s = _first_step(v, name, settings, d)
            r.first_step_warm_s = _first_step(v, name, settings, None)
        except RuntimeError as e:
            r.error = str(e)


def _first_step(variant: str, name: str, settings: Settings, cache_dir: str | None) -> float:
    w = Worker(variant, name, settings, cache_dir)
    try:
        w.call("steps", n=1)
        return time.perf_counter() - w.started
    finally:
        w.close()


def run(settings: Settings, show_progress: bool = True) -> list[WorkloadResult]:
    """Every workload of ``settings``, one after the other, with a progress bar on stderr."""
    from tqdm import tqdm
    total = len(settings.workloads) * settings.rounds
    results = []
    with tqdm(total=total, disable=not show_progress, file=sys.stderr, unit="round",
              leave=False) as bar:
        for name in settings.workloads:
            bar.set_description(name)
            results.append(run_workload(name, settings, bar))
    return results


def unknown_workloads(names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in zoo.WORKLOADS]
