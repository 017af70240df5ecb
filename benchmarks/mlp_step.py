"""MLP training step (784-256-10, SGD nesterov) in fusegrad and torch eager, in one run.

Reports median step times side by side (as a ratio), the step's kernel count, and the time from
process start to the first finished step with an empty (cold) and a filled (warm) kernel cache.

    python benchmarks/mlp_step.py [--batch 64] [--steps 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def fusegrad_steps(batches, warmup: int) -> tuple[list[float], int, int]:
    import fusegrad as fg
    import fusegrad.nnlib as nn
    from fusegrad import demo
    from fusegrad.tracer.realize import STATS
    fg.manual_seed(0)
    model = demo.make_mlp()
    opt = fg.optimlib.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    times = []
    for xb, yb in batches:
        t0 = time.perf_counter()
        step(fg.from_numpy(xb), fg.from_numpy(yb)).item()
        times.append(time.perf_counter() - t0)
    report = STATS.last_entry.compiled.report
    return times[warmup:], report.kernel_count, report.extern_count


def torch_steps(batches, warmup: int) -> list[float]:
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for xb, yb in batches:
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return times[warmup:]


def first_step_seconds(cache_dir: str, batch: int) -> float:
    """Wall time of a fresh process that imports fusegrad and finishes one training step."""
    code = ("import fusegrad as fg, fusegrad.nnlib as nn\n"
            "from fusegrad import demo\n"
            "m = demo.make_mlp(); o = fg.optimlib.SGD(m.parameters(), lr=0.01, momentum=0.9, "
            "nesterov=True, weight_decay=1e-4)\n"
            "s = demo.make_step(m, o, nn.CrossEntropyLoss())\n"
            f"x, y = demo.synthetic_batches(1, {batch})[0]\n"
            "s(fg.from_numpy(x), fg.from_numpy(y)).item()\n")
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--no-startup", action="store_true")
    args = ap.parse_args()
    from fusegrad import demo
    batches = demo.synthetic_batches(args.steps, args.batch)
    fg_times, kernels, externs = fusegrad_steps(batches, args.warmup)
    th_times = torch_steps(batches, args.warmup)
    fg_med, th_med = statistics.median(fg_times), statistics.median(th_times)
    print(f"MLP 784-256-10, batch {args.batch}, SGD nesterov+wd, {len(fg_times)} timed steps")
    print(f"  fusegrad step: {kernels} kernels + {externs} extern calls")
    print(f"  fusegrad median step {fg_med * 1e3:8.3f} ms (p10 "
          f"{np.percentile(fg_times, 10) * 1e3:.3f}, p90 {np.percentile(fg_times, 90) * 1e3:.3f})")
    print(f"  torch    median step {th_med * 1e3:8.3f} ms (p10 "
          f"{np.percentile(th_times, 10) * 1e3:.3f}, p90 {np.percentile(th_times, 90) * 1e3:.3f})")
    print(f"  speed-up vs torch eager: {th_med / fg_med:.2f}x")
    if not args.no_startup:
        with tempfile.TemporaryDirectory() as d:
            cold = first_step_seconds(d, args.batch)
            warm = first_step_seconds(d, args.batch)
        print(f"  process start -> first finished step: cold cache {cold:.2f} s, "
              f"warm cache {warm:.2f} s")


if __name__ == "__main__":
    main()
