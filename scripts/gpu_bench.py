"""The zoo's training steps on the GPU: fusegrad (numba_cuda, ``fusegrad.compile``) beside PyTorch
on the GPU (eager, when a CUDA build of torch is installed), from the same initial weights.

For each workload: the first steps' losses of both (a correctness check), then the median time
of a step over several timed rounds, each ended by a device synchronisation, of fusegrad
compiled, fusegrad uncompiled and torch. Writes JSON.

With ``--jobs N`` every workload first runs its first steps in a process of its own, N at a
time, so the kernels compile side by side into the disk cache (``cold_first_3_steps_s``); the
timed runs then follow one after another in this process.

    python scripts/gpu_bench.py [--small] [--steps 20] [--rounds 5] [--jobs N] [--json FILE] [names...]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

import fusegrad
from fusegrad.bench.zoo import WORKLOADS, Built, build_pair


def _on(built: Built, lib: Any, device: Any,
        compiled: bool = True) -> tuple[Callable[[], Any], Callable[[], None]]:
    """The workload's step with everything on ``device``, and the library's synchronisation."""
    built.model.to(device)
    inputs = tuple(x.to(device) for x in built.inputs)
    target = built.target.to(device)

    def step(*xs: Any) -> Any:
        built.optimizer.zero_grad()
        loss = built.loss_fn(built.model(*xs[:-1]), xs[-1])
        loss.backward()
        built.optimizer.step()
        return loss

    run = fusegrad.compile(step) if lib is fusegrad and compiled else step
    return (lambda: run(*inputs, target)), lib.cuda.synchronize


def _time(step: Callable[[], Any], sync: Callable[[], None], steps: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def bench(name: str, small: bool, steps: int, rounds: int, with_torch: bool) -> dict[str, Any]:
    import torch
    from fusegrad.backends.numba_cuda.externs import matmul_path
    ref, ours = build_pair(name, small=small)   # fusegrad starts from torch's weights
    fg_step, fg_sync = _on(ours, fusegrad, "cuda")
    t0 = time.perf_counter()
    fg_losses = [float(fg_step().item()) for _ in range(3)]
    first = time.perf_counter() - t0
    row: dict[str, Any] = {"workload": name, "fusegrad_losses": fg_losses,
                           "fusegrad_first_3_steps_s": first, "matmul": matmul_path("float32")}
    if with_torch:
        # full float32 products in torch too (cuDNN's RNNs default to TF32): the losses compare
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        th_step, th_sync = _on(ref, torch, "cuda")
        th_losses = [float(th_step().item()) for _ in range(3)]
        row["torch_losses"] = th_losses
        row["losses_agree"] = bool(np.allclose(fg_losses, th_losses, rtol=1e-3, atol=1e-5))
    row["fusegrad_step_ms"] = 1e3 * _time(fg_step, fg_sync, steps, rounds)
    _, ours_eager = build_pair(name, small=small)
    eager_step, _ = _on(ours_eager, fusegrad, "cuda", compiled=False)
    eager_step()
    row["fusegrad_uncompiled_step_ms"] = 1e3 * _time(eager_step, fg_sync, steps, rounds)
    if with_torch:
        row["torch_eager_step_ms"] = 1e3 * _time(th_step, th_sync, steps, rounds)
        row["torch_over_fusegrad"] = row["torch_eager_step_ms"] / row["fusegrad_step_ms"]
    return row


def profile(name: str, small: bool, steps: int) -> None:
    """cProfile of ``steps`` compiled steps of ``name`` after 3 warm-up steps: where the host's
    time goes (printed, 30 rows by own time)."""
    import cProfile
    import pstats
    _, ours = build_pair(name, small=small)
    step, sync = _on(ours, fusegrad, "cuda")
    for _ in range(3):
        step()
    sync()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    sync()
    prof.disable()
    print(f"--- profile of {steps} compiled steps of {name}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def _cold(name: str, small: bool) -> dict[str, Any]:
    """The first 3 compiled steps of ``name`` in a new process (compiling into the disk cache)."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys, time, fusegrad; sys.path.insert(0, {here!r}); import gpu_bench as g; "
            "from fusegrad.bench.zoo import build_pair; "
            f"_, ours = build_pair({name!r}, small={small}); s, _ = g._on(ours, fusegrad, 'cuda'); "
            "t0 = time.perf_counter(); [float(s().item()) for _ in range(3)]; "
            "print(time.perf_counter() - t0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        return {"cold_error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return {"cold_first_3_steps_s": float(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"workloads (default: all): {', '.join(WORKLOADS)}")
    parser.add_argument("--small", action="store_true", help="test-sized shapes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1,
                        help="compile the workloads in this many processes first")
    parser.add_argument("--json", metavar="FILE", default="gpu_bench.json")
    parser.add_argument("--profile", type=int, metavar="STEPS", default=0,
                        help="instead: cProfile this many compiled steps of each workload")
    args = parser.parse_args()
    if not fusegrad.cuda.is_available():
        print(f"fusegrad: CUDA is not available: {fusegrad.cuda.unavailable_reason()}",
              file=sys.stderr)
        return 1
    import torch
    with_torch = torch.cuda.is_available()
    if not with_torch:
        print("torch has no CUDA here: timing fusegrad alone", file=sys.stderr)
    names = args.names or list(WORKLOADS)
    if args.profile:
        for name in names:
            profile(name, args.small, args.profile)
        return 0
    cold: dict[str, dict[str, Any]] = {name: {} for name in names}
    if args.jobs > 1:
        with ThreadPoolExecutor(args.jobs) as pool:
            cold = dict(zip(names, pool.map(lambda n: _cold(n, args.small), names)))
    rows = []
    for name in names:
        try:
            row = bench(name, args.small, args.steps, args.rounds, with_torch)
        except Exception as exc:  # noqa: BLE001 - one workload failing is a result to report
            row = {"workload": name, "error": f"{type(exc).__name__}: {exc}"}
        row.update(cold[name])
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"version": 1, "gpu": fusegrad.cuda.get_device_name(), "host": platform.node(),
           "fusegrad": fusegrad.__version__, "torch": torch.__version__,
           "torch_cuda": with_torch, "small": args.small, "results": rows}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {args.json}")
    return 0 if all("error" not in r and r.get("losses_agree", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
