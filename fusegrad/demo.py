"""The built-in training demo: the guide's MLP on synthetic data, with timings and kernel counts."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim


@dataclass
class StepRecord:
    step: int
    loss: float
    seconds: float


def synthetic_batches(steps: int, batch: int, features: int = 784, classes: int = 10,
                      seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gaussian clusters around fixed class centres: learnable, so the loss visibly falls."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, features)).astype(np.float32)
    out = []
    for _ in range(steps):
        y = rng.integers(0, classes, size=batch)
        x = centres[y] + 2.0 * rng.standard_normal((batch, features)).astype(np.float32)
        out.append((x.astype(np.float32), y.astype(np.int64)))
    return out


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def make_step(model: nn.Module, opt: optim.Optimizer, loss_fn: nn.Module):
    def step(x: fg.Tensor, y: fg.Tensor) -> fg.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def train(steps: int = 20, batch: int = 64, seed: int = 0, verbose: bool = True,
          compiled: bool = False) -> list[StepRecord]:
    """Train the MLP for ``steps`` steps; print loss, time per step and the kernels compiled.
    ``compiled``: run the step through ``fusegrad.compile`` (traced once, then replayed)."""
    from .tracer.realize import STATS
    fg.manual_seed(seed)
    model = make_mlp()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step = make_step(model, opt, nn.CrossEntropyLoss())
    if compiled:
        step = fg.compile(step)
    records = []
    for i, (xb, yb) in enumerate(synthetic_batches(steps, batch, seed=seed)):
        runs = STATS.runs
        t0 = time.perf_counter()
        loss = step(fg.from_numpy(xb), fg.from_numpy(yb)).item()
        dt = time.perf_counter() - t0
        records.append(StepRecord(i, loss, dt))
        if verbose:
            # uncompiled: the forward and backward, then the optimizer's replayed update
            reports = [e.compiled.report for e in STATS.ran_since(runs)]
            kernels = (f"{sum(r.kernel_count for r in reports)} kernels + "
                       f"{sum(r.extern_count for r in reports)} extern"
                       if reports and reports[0].backend != "interpreter" else "interpreted")
            print(f"step {i:3d}  loss {loss:.4f}  {dt * 1e3:8.2f} ms   "
                  f"{len(reports)} program(s) run ({kernels}), "
                  f"{STATS.programs_compiled} compiled so far")
    if verbose and len(records) > 2:
        steady = sorted(r.seconds for r in records[2:])
        print(f"median step (after warm-up): {steady[len(steady) // 2] * 1e3:.2f} ms; "
              f"first step (compile included): {records[0].seconds:.2f} s")
    return records
