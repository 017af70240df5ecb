"""``fusegrad.distributed`` in one process (a world of one), the sampler and DDP's buckets."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler as TorchSampler

import fusegrad as fg
import fusegrad.distributed as dist
from fusegrad.nn.parallel import DistributedDataParallel, _buckets
from fusegrad.utils.data import DistributedSampler

pytest.importorskip("mpi4py", reason="MPI for Python is not installed (pip install 'fusegrad[mpi]')")


@pytest.fixture
def world():
    dist.init_process_group("mpi")
    yield
    dist.destroy_process_group()


def test_a_process_without_mpiexec_is_a_world_of_one(world):
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    t = fg.tensor([1.0, -2.0, 3.0])
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), [1.0, -2.0, 3.0])
    dist.broadcast(t, 0)
    parts = [fg.zeros(3)]
    dist.all_gather(parts, t)
    np.testing.assert_array_equal(parts[0].numpy(), t.numpy())
    dist.barrier()
    scalar = fg.tensor(5.0)  # 0-d stays 0-d (BatchNorm's num_batches_tracked)
    assert dist.broadcast(scalar, 0, async_op=True).wait()
    gathered = [fg.zeros(())]
    dist.all_gather(gathered, scalar)
    assert gathered[0].shape == () and gathered[0].item() == 5.0
    with pytest.raises(TypeError, match="needs a number tensor, got bool"):
        dist.all_reduce(fg.ones(2, dtype=fg.bool))
    with pytest.raises(RuntimeError, match="twice"):
        dist.init_process_group()


def test_the_group_must_be_initialized_first():
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.get_rank()


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(fg.FusegradError, match=r"fusegrad\[mpi\]"):
        dist.init_process_group()
    assert not dist.is_available()


def test_all_reduce_is_an_op_of_the_compiled_program(world):
    @fg.compile
    def step(x):
        y = x * 2
        dist.all_reduce(y)
        return y + 1

    for _ in range(3):
        x = fg.tensor([1.0, 2.0])
        np.testing.assert_array_equal(step(x).numpy(), [3.0, 5.0])
    assert step.hits == 2
    text = fg.explain(step)
    assert "extern calls: 1" in text


def test_broadcast_cannot_be_traced(world):
    @fg.compile
    def f(x):
        dist.broadcast(x, 0)
        return x

    with pytest.raises(fg.CaptureError, match="broadcast"):
        f(fg.ones(2))


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                                    (2, 4, False), (7, 2, True)])
def test_distributed_sampler_shards_as_torch_does(n, replicas, drop_last):
    for rank in range(replicas):
        ours = DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_distributed_sampler_shuffles_per_epoch_alike_on_every_rank():
    shards = [DistributedSampler(range(10), 2, r, seed=3) for r in range(2)]
    first = [list(s) for s in shards]
    assert sorted(first[0] + first[1]) == list(range(10))
    for s in shards:
        s.set_epoch(1)
    second = [list(s) for s in shards]
    assert sorted(second[0] + second[1]) == list(range(10)) and second != first
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(range(4), 2, 2)


@pytest.mark.parametrize("sizes", [(10, 200_000, 100_000, 300_000), (5, 3, 400_000, 7),
                                   ((10, "float64"), 200_000, (5, "float64"), 100_000, 300_000)])
@pytest.mark.parametrize("cap_mb", [1.0, 25.0])
def test_buckets_are_torchs(sizes, cap_mb):
    """Per dtype, in order, closing once 1 MB (the first) or ``cap_mb`` is reached: the same
    assignment as torch's ``_compute_bucket_assignment_by_size``."""
    torch_dist = pytest.importorskip("torch.distributed")
    specs = [s if isinstance(s, tuple) else (s, "float32") for s in sizes]
    ours = [fg.zeros(n, dtype=getattr(fg, dt)) for n, dt in specs]
    theirs = [torch.zeros(n, dtype=getattr(torch, dt)) for n, dt in specs]
    index = {id(t): i for i, t in enumerate(ours)}
    got = [[index[id(t)] for t in b] for b in _buckets(ours, cap_mb)]
    want, _ = torch_dist._compute_bucket_assignment_by_size(
        theirs, [2**20, int(cap_mb * 2**20)])
    assert got == want


def test_ddp_in_a_world_of_one_trains_as_the_plain_model(world):
    def train(wrap):
        fg.manual_seed(0)
        model = fg.nn.Linear(4, 3)
        net = DistributedDataParallel(model) if wrap else model
        opt = fg.optim.SGD(net.parameters(), lr=0.1)
        for s in range(3):
            opt.zero_grad()
            net(fg.ones(5, 4) * s).pow(2).sum().backward()
            opt.step()
        return model.weight.detach().numpy()

    np.testing.assert_array_equal(train(True), train(False))
    assert list(DistributedDataParallel(fg.nn.Linear(2, 2)).state_dict()) == \
        ["module.weight", "module.bias"]
