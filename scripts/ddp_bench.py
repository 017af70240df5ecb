"""Step time of data-parallel training, 1 process vs N ranks: ``python scripts/ddp_bench.py``.

The guide's MLP (784-256-10, SGD with momentum) at a global batch of 512, compiled, trained by
one process on the whole batch and by ``--ranks`` MPI ranks on equal shares (each rank one
thread, so the ranks do not fight over the cores; the single process uses every core). The two
take turns, ``--rounds`` times each; the table gives medians of the step time and of the time
each step spends in the gradient all-reduce.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH = 512


def worker(steps: int) -> None:
    import numpy as np

    import fusegrad as torch
    import fusegrad.distributed as dist
    import fusegrad.nn as nn
    import fusegrad.nn.functional as F
    from fusegrad.ir.collective import STATS
    from fusegrad.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    @torch.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(rank)
    x = torch.from_numpy(rng.standard_normal((BATCH // world, 784)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, BATCH // world))
    for _ in range(5):
        step(x, y)
    dist.barrier()
    times, seconds0 = [], STATS.seconds
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x, y).item()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps({"ranks": world, "step_ms": statistics.median(times) * 1e3,
                          "allreduce_ms": (STATS.seconds - seconds0) / steps * 1e3}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return 0
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    results: dict[int, list[dict]] = {1: [], args.ranks: []}
    for _ in range(args.rounds):
        for n in results:
            env = dict(os.environ, FUSEGRAD_QUIET="1")
            if n > 1:
                env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            out = subprocess.run([mpiexec, "-n", str(n), sys.executable, __file__, "--worker",
                                  "--steps", str(args.steps)], env=env, capture_output=True,
                                 text=True, check=True)
            results[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"MLP 784-256-10, global batch {BATCH}, compiled step, median of {args.rounds} rounds "
          f"x {args.steps} steps")
    print(f"{'processes':>9}  {'step ms':>8}  {'allreduce ms':>12}  {'allreduce share':>15}")
    for n, rows in results.items():
        step = statistics.median(r["step_ms"] for r in rows)
        comm = statistics.median(r["allreduce_ms"] for r in rows)
        print(f"{n:>9}  {step:8.2f}  {comm:12.3f}  {comm / step:15.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
