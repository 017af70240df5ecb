"""``fusegrad.utils.data`` behaves as ``torch.utils.data``: the same batches, lengths, errors."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.utils.data as tdata

import fusegrad as fg
import fusegrad.nn as nn
import fusegrad.utils.data as fdata
from fusegrad.tracer.realize import STATS

Point = namedtuple("Point", "x y")


def _plain(batch):
    """A batch as plain Python (tensors as nested lists) to compare the two libraries."""
    if isinstance(batch, (fg.Tensor, torch.Tensor)):
        return (str(batch.dtype).rsplit(".", 1)[-1], batch.tolist())
    if isinstance(batch, dict):
        return {k: _plain(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch).__name__, [_plain(b) for b in batch]
    return batch


class Items:
    """A map-style dataset of mixed items, defined once for both libraries."""

    def __init__(self, lib, kind: str):
        self.lib, self.kind = lib, kind

    def __len__(self):
        return 7

    def __getitem__(self, i):
        x = self.lib.tensor(np.arange(3, dtype=np.float32) + i)
        if self.kind == "tuple":
            return x, i
        if self.kind == "dict":
            return {"x": x, "y": float(i) / 2, "name": f"item{i}", "flag": i % 2 == 0}
        if self.kind == "namedtuple":
            return Point(x, np.int64(i))
        return np.full((2,), i, dtype=np.float64)  # numpy arrays


@pytest.mark.parametrize("kind", ["tuple", "dict", "namedtuple", "numpy"])
@pytest.mark.parametrize("batch_size,drop_last", [(3, False), (3, True), (7, False), (None, False)])
def test_batches_match_torch(kind, batch_size, drop_last):
    t = tdata.DataLoader(Items(torch, kind), batch_size=batch_size, drop_last=drop_last)
    f = fdata.DataLoader(Items(fg, kind), batch_size=batch_size, drop_last=drop_last)
    assert len(f) == len(t)
    assert [_plain(b) for b in f] == [_plain(b) for b in t]


def test_tensor_dataset_shuffled_epochs_cover_every_item_once():
    x, y = fg.arange(20, dtype=fg.float32).reshape(10, 2), fg.arange(10)
    ds = fdata.TensorDataset(x, y)
    assert len(ds) == 10 and ds[3][1].item() == 3
    loader = fdata.DataLoader(ds, batch_size=4, shuffle=True,
                              generator=fg.Generator().manual_seed(1))
    epochs = [[yb.tolist() for _, yb in loader] for _ in range(2)]
    for epoch in epochs:
        assert [len(b) for b in epoch] == [4, 4, 2]
        assert sorted(sum(epoch, [])) == list(range(10))
    assert epochs[0] != epochs[1]          # a new order each epoch
    again = fdata.DataLoader(ds, batch_size=4, shuffle=True,
                             generator=fg.Generator().manual_seed(1))
    assert [yb.tolist() for _, yb in again] == epochs[0]   # the same seed, the same order
    for xb, yb in loader:
        np.testing.assert_array_equal(xb.numpy(), x.numpy()[yb.numpy()])


def test_tensor_dataset_size_mismatch_raises():
    with pytest.raises(AssertionError, match="Size mismatch"):
        fdata.TensorDataset(fg.zeros(3, 2), fg.zeros(4))


@pytest.mark.parametrize("lengths", [[3, 7], [0.3, 0.7], [0.33, 0.33, 0.34], [0.5, 0.5]])
def test_random_split_sizes_match_torch(lengths):
    ds = list(range(10))
    got = fdata.random_split(ds, lengths, generator=fg.Generator().manual_seed(0))
    want = tdata.random_split(ds, lengths, generator=torch.Generator().manual_seed(0))
    assert [len(s) for s in got] == [len(s) for s in want]
    assert sorted(i for s in got for i in s) == ds


def test_random_split_bad_lengths_raise():
    with pytest.raises(ValueError, match="Sum of input lengths"):
        fdata.random_split(list(range(10)), [3, 3])


def test_subset_and_concat():
    ds = fdata.TensorDataset(fg.arange(6))
    sub = fdata.Subset(ds, [5, 1])
    assert [sub[i][0].item() for i in range(len(sub))] == [5, 1]
    both = sub + fdata.Subset(ds, [0])
    assert len(both) == 3 and both[2][0].item() == 0 and both[-1][0].item() == 0


def test_iterable_dataset_batches():
    class Stream(fdata.IterableDataset):
        def __iter__(self):
            return iter(range(5))

    assert [b.tolist() for b in fdata.DataLoader(Stream(), batch_size=2)] == [[0, 1], [2, 3], [4]]


def test_bad_arguments_raise_as_in_torch():
    ds = fdata.TensorDataset(fg.zeros(4))
    with pytest.raises(ValueError, match="num_workers"):
        fdata.DataLoader(ds, num_workers=2)
    with pytest.raises(ValueError, match="batch_size"):
        fdata.DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="mutually exclusive"):
        fdata.DataLoader(ds, sampler=fdata.SequentialSampler(ds), shuffle=True)


def test_an_epoch_of_loader_batches_compiles_at_most_a_few_programs():
    """Batch contents are data, not graph constants: 16 batches reuse the same programs."""
    fg.manual_seed(0)
    ds = fdata.TensorDataset(fg.randn(512, 8), fg.randint(0, 3, (512,)))
    model = nn.Linear(8, 3)
    opt = fg.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    before = STATS.programs_compiled
    for xb, yb in fdata.DataLoader(ds, batch_size=32, shuffle=True):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        loss.item()
    assert STATS.programs_compiled - before <= 3


@pytest.mark.parametrize("assemble", ["index_tensor", "slice", "stack_items"])
def test_a_hand_batched_epoch_compiles_at_most_three_programs(assemble):
    """Batches cut from realized data by hand (a permutation's slices used as indices, plain
    slices, or items stacked one by one) are new leaves: one epoch of 512 items in batches of
    32 reuses its programs."""
    fg.manual_seed(0)
    x, y = fg.randn(512, 8), fg.randint(0, 3, (512,))
    model = nn.Linear(8, 3)
    opt = fg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    perm = fg.randperm(512)
    before = STATS.programs_compiled
    for i in range(0, 512, 32):
        if assemble == "index_tensor":
            idx = perm[i:i + 32]
            xb, yb = x[idx], y[idx]
        elif assemble == "slice":
            xb, yb = x[i:i + 32], y[i:i + 32]
        else:
            rows = [int(j) for j in perm[i:i + 32].tolist()]
            xb, yb = fg.stack([x[j] for j in rows]), fg.stack([y[j] for j in rows])
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        loss.item()
    assert STATS.programs_compiled - before <= 3
