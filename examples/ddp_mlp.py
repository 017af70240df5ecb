"""Data-parallel training of the guide's MLP over MPI: ``mpiexec -n 2 python examples/ddp_mlp.py``.

Every rank trains the same model on its share of each epoch (``DistributedSampler``); after each
``backward()`` the gradients are averaged over the ranks, so the replicas stay equal. Rank 0
saves the checkpoint; every rank loads it. Without ``mpiexec`` it runs as a world of one.
Needs the MPI extra: ``pip install -e '.[mpi]'``.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import fusegrad as torch
import fusegrad.distributed as dist
import fusegrad.nn as nn
import fusegrad.nn.functional as F
from fusegrad.nn.parallel import DistributedDataParallel as DDP
from fusegrad.utils.data import DataLoader, DistributedSampler, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--compile", action="store_true", help="compile the training step")
    args = parser.parse_args()

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same data on every rank; DDP copies rank 0's weights anyway
    x = torch.randn(2048, 784)
    y = (x[:, :10].sum(1) > 0).long() + 2 * (x[:, 10:20].sum(1) > 0).long()
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    torch.manual_seed(rank)  # different initial weights per rank: DDP broadcasts rank 0's
    model = DDP(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(xb, yb):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()  # gradients averaged over the ranks here
        opt.step()
        return loss

    if args.compile:
        step = torch.compile(step)  # the all-reduce is inside the compiled program
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total, count = torch.zeros(()), 0
        for xb, yb in loader:
            total = total + step(xb, yb).detach()
            count += 1
        mean = total / count
        dist.all_reduce(mean, dist.ReduceOp.AVG)
        if rank == 0:
            print(f"epoch {epoch}: loss {mean.item():.4f} ({world} ranks, {count} steps each)")

    # checkpoints: rank 0 writes, every rank waits, then every rank may load
    path = os.path.join(tempfile.gettempdir(), "fusegrad_ddp_mlp.safetensors")
    if rank == 0:
        torch.save(model.module.state_dict(), path)
    dist.barrier()
    model.module.load_state_dict(torch.load(path))
    if rank == 0:
        print(f"checkpoint {path} saved by rank 0 and loaded on every rank")


if __name__ == "__main__":
    main()
