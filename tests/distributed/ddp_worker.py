"""Run under ``mpiexec -n 2`` by ``test_ddp.py``: data-parallel training against one process.

``python ddp_worker.py JOB...`` with each JOB ``train:mlp|cnn:eager|compiled``: every rank
trains a ``DistributedDataParallel`` model on its half of each global batch and, beside it, a
plain copy of the model on the whole batch (the one-process run); rank 0 prints, as one JSON
line per job, the largest differences of the losses (the mean over ranks) and of the
parameters after each step, relative to the largest magnitude. ``nosync:...``: the same with
two micro-batches a step, the first inside ``no_sync()``, against one process accumulating the
two whole micro-batches; ``flip:mlp:compiled`` compiles the micro-step alone and calls it
inside and outside ``no_sync()``. ``train:bn:...`` (BatchNorm: local batch statistics, so only
the replicas are compared with each other, as ``ranks``); ``train:unused:eager`` (a layer no
forward uses keeps no gradient). ``fail``: rank 1 raises while rank 0 waits in a barrier (the job must
end, not hang).
"""
from __future__ import annotations

import json
import sys

import numpy as np

import fusegrad as torch
import fusegrad.distributed as dist
import fusegrad.nn as nn
import fusegrad.nn.functional as F
from fusegrad.nn.parallel import DistributedDataParallel as DDP

STEPS, BATCH = 20, 16


class WithUnused(nn.Module):
    """The guide's MLP beside a layer its forward never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.net(x)


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":  # the guide's MLP
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if kind == "unused":
        return WithUnused()
    if kind == "bn":
        return nn.Sequential(nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 10))


def batch(kind: str, step: int, part: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 * step + part)
    shape = (BATCH, 3, 8, 8) if kind == "cnn" else (BATCH, 784)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, BATCH)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference, relative to the largest magnitude of ``b``."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def main() -> None:
    dist.init_process_group("mpi")
    for job in sys.argv[1:]:
        if job == "fail":
            if dist.get_rank() == 1:
                raise RuntimeError("rank 1 fails on purpose")
            dist.barrier()
        else:
            run(*job.split(":"))


def run(mode: str, kind: str, how: str) -> None:
    rank, size = dist.get_rank(), dist.get_world_size()
    lo, hi = rank * BATCH // size, (rank + 1) * BATCH // size
    ref, ddp = make(kind), DDP(make(kind))
    decay = 0.1 if kind == "unused" else 0.0  # would move a parameter given a zero gradient
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=decay)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=decay)

    def step_ref(parts):
        opt_ref.zero_grad()
        losses = []
        for x, y in parts:
            loss = F.cross_entropy(ref(x), y)
            loss.backward()
            losses.append(loss)
        opt_ref.step()
        return losses[-1]

    def step_ddp(parts):
        opt.zero_grad()
        for i, (x, y) in enumerate(parts):
            if i < len(parts) - 1:
                with ddp.no_sync():
                    F.cross_entropy(ddp(x), y).backward()
            else:
                loss = F.cross_entropy(ddp(x), y)
                loss.backward()
        opt.step()
        return loss

    def micro(x, y):
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        return loss

    def step_flip(parts):  # the compiled micro-step, called inside and outside no_sync
        opt.zero_grad()
        with ddp.no_sync():
            micro(*parts[0])
        loss = micro(*parts[1])
        opt.step()
        return loss

    if how == "compiled" and mode == "flip":
        micro = torch.compile(micro)
        step_ddp = step_flip
    elif how == "compiled":
        step_ref, step_ddp = torch.compile(step_ref), torch.compile(step_ddp)
    worst = {"loss": 0.0, "params": 0.0, "ranks": 0.0}
    for s in range(STEPS):
        parts = [batch(kind, s, p) for p in range(1 if mode == "train" else 2)]
        full = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in parts]
        mine = [(torch.from_numpy(x[lo:hi].copy()), torch.from_numpy(y[lo:hi].copy()))
                for x, y in parts]
        loss_ref = step_ref(full)
        loss = step_ddp(mine).detach().clone()
        dist.all_reduce(loss, dist.ReduceOp.AVG)
        worst["loss"] = max(worst["loss"], rel(loss.numpy(), loss_ref.detach().numpy()))
        for p, q in zip(ddp.module.parameters(), ref.parameters()):
            worst["params"] = max(worst["params"], rel(p.detach().numpy(), q.detach().numpy()))
            copies = [torch.zeros_like(p) for _ in range(size)]
            dist.all_gather(copies, p.detach())  # the replicas stay equal
            worst["ranks"] = max(worst["ranks"], *(rel(c.numpy(), p.detach().numpy())
                                                   for c in copies))
    if kind == "unused":  # no rank gave it a gradient: None, and not moved by the decay
        worst["unused_grad_none"] = ddp.module.unused.weight.grad is None
    if how == "compiled" and mode != "flip":  # one program per step, replayed, all-reduces in it
        (entry,) = [e for entries in step_ddp.entries.values() for e in entries]
        run_loop = entry.program_entry.compiled.program.run_source.split("def run_copying")[0]
        worst["replays"] = entry.replays
        worst["allreduces"] = run_loop.count("\n    allreduce(")
    if rank == 0:
        print(json.dumps({"job": f"{mode}:{kind}:{how}", "world": size, **worst}), flush=True)


if __name__ == "__main__":
    main()
