"""``torch.utils.data`` for fusegrad: datasets, samplers, batching and ``DataLoader``.

Batches are assembled with numpy and handed to fusegrad as new leaf tensors, so the items and
indices of a batch are data, never constants of a traced graph: an epoch of same-shaped
batches compiles no new program, however the batches were drawn.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from ..tracer import functions as F
from ..tracer.creation import tensor as _tensor
from ..tracer.rng import Generator, source
from ..tracer.tensor import Tensor

T = TypeVar("T")

__all__ = ["BatchSampler", "ConcatDataset", "DataLoader", "Dataset", "DistributedSampler",
           "IterableDataset",
           "RandomSampler", "Sampler", "SequentialSampler", "Subset", "TensorDataset",
           "default_collate", "default_convert", "random_split"]


# ---------------------------------------------------------------------------- datasets
class Dataset(Generic[T]):
    """A map-style dataset: ``__getitem__(index)`` and, usually, ``__len__``."""

    def __getitem__(self, index: int) -> T:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: "Dataset[T]") -> "ConcatDataset[T]":
        return ConcatDataset([self, other])


class IterableDataset(Dataset[T]):
    """A dataset that is a stream: ``__iter__`` yields its items."""

    def __iter__(self) -> Iterator[T]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Item ``i`` is ``tuple(t[i] for t in tensors)``; the tensors share their first dim."""

    def __init__(self, *tensors: Tensor):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = [t.shape[0] for t in tensors]
        if any(s != sizes[0] for s in sizes):
            raise AssertionError(f"Size mismatch between tensors: first dims {sizes}")
        self.tensors = tensors

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        """The items at ``indices`` stacked, gathered with numpy (what DataLoader uses)."""
        idx = np.asarray(indices, dtype=np.int64)
        return tuple(_as_batch(_host(t)[idx]) for t in self.tensors)


class Subset(Dataset[T]):
    """The items of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset[T], indices: Sequence[int]):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, index: int | list[int]) -> T:
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]  # type: ignore[index]
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset[T]):
    """Several datasets one after the other."""

    def __init__(self, datasets: Iterable[Dataset[T]]):
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))  # type: ignore

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def __getitem__(self, index: int) -> T:
        if index < 0:
            if -index > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            index += len(self)
        d = bisect.bisect_right(self.cumulative_sizes, index)
        start = 0 if d == 0 else int(self.cumulative_sizes[d - 1])
        return self.datasets[d][index - start]


def random_split(dataset: Dataset[T], lengths: Sequence[int | float],
                 generator: Generator | None = None) -> list[Subset[T]]:
    """Split ``dataset`` into non-overlapping random subsets of the given lengths (or
    fractions summing to 1, the remainder dealt one by one from the first, as torch does)."""
    n = len(dataset)  # type: ignore[arg-type]
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        sizes = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        sizes = [int(x) for x in lengths]
    if any(s < 0 for s in sizes):
        raise ValueError(f"random_split: lengths must be non-negative, got {list(lengths)}")
    if sum(sizes) != n:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    perm = source(generator).permutation(n).tolist()
    out, start = [], 0
    for s in sizes:
        out.append(Subset(dataset, perm[start:start + s]))
        start += s
    return out


# ---------------------------------------------------------------------------- samplers
class Sampler(Generic[T]):
    """Yields the indices (or batches of indices) a DataLoader reads."""

    def __iter__(self) -> Iterator[T]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler[int]):
    def __init__(self, data_source: Any):
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """A new random order each epoch, from ``generator`` (or fusegrad's global seed)."""

    def __init__(self, data_source: Any, replacement: bool = False,
                 num_samples: int | None = None, generator: Generator | None = None):
        self.data_source, self.replacement = data_source, replacement
        self._num_samples, self.generator = num_samples, generator
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got "
                             f"num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n, gen = len(self.data_source), source(self.generator)
        if self.replacement:
            yield from gen.integers(0, n, self.num_samples).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from gen.permutation(n).tolist()
        yield from gen.permutation(n)[:self.num_samples % n].tolist()

    def __len__(self) -> int:
        return self.num_samples


class DistributedSampler(Sampler[int]):
    """The share of ``dataset``'s indices that process ``rank`` of ``num_replicas`` reads (the
    default group's rank and size): a new order each epoch (``set_epoch``), the same on every
    process for the same ``seed``; padded by repeating indices to split evenly, or cut
    (``drop_last``), as torch's."""

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            from .. import distributed
            num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
            rank = distributed.get_rank() if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        n = len(dataset)
        self.num_samples = math.ceil((n - num_replicas) / num_replicas) \
            if drop_last and n % num_replicas else math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        indices = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist() \
            if self.shuffle else list(range(n))
        if self.drop_last:
            indices = indices[:self.total_size]
        elif indices:
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently in epoch ``epoch`` (call it before each epoch's iteration)."""
        self.epoch = epoch


class BatchSampler(Sampler[list[int]]):
    """Groups another sampler's indices into lists of ``batch_size``."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


# ---------------------------------------------------------------------------- collation
def _host(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _as_batch(arr: np.ndarray) -> Tensor:
    return _tensor(np.array(arr, order="C"))  # keeps 0-d arrays 0-d


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch, as torch's ``default_collate``: tensors and numpy
    arrays are stacked into a new tensor, Python ints become int64 and floats float64 tensors,
    bools bool tensors, mappings and sequences are collated field by field, strings and
    other objects stay as lists."""
    first = batch[0]
    if isinstance(first, Tensor):
        shapes = {tuple(t.shape) for t in batch}
        if len(shapes) != 1:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{sorted(shapes)} in the batch")
        if any(t.requires_grad for t in batch):
            return F.stack(list(batch))   # keeps autograd, as torch.stack would
        return _as_batch(np.stack([_host(t) for t in batch]))
    if isinstance(first, np.ndarray) and first.dtype.kind not in "USO":
        return _as_batch(np.stack(batch))
    if isinstance(first, np.generic):
        return _as_batch(np.array(batch))
    if isinstance(first, bool):
        return _tensor(list(batch), dtype="bool")
    if isinstance(first, int):
        return _tensor(list(batch), dtype="int64")
    if isinstance(first, float):
        return _tensor(list(batch), dtype="float64")
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, Mapping):
        fields = {k: default_collate([d[k] for d in batch]) for k in first}
        try:
            return type(first)(fields)
        except TypeError:   # a mapping type that cannot be built from a dict
            return fields
    if isinstance(first, tuple) and hasattr(first, "_fields"):   # namedtuple
        return type(first)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(first, Sequence):
        if any(len(s) != len(first) for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, "
                    f"dicts or lists; found {type(first).__name__}")


def default_convert(item: Any) -> Any:
    """An item unbatched (``batch_size=None``), as torch's ``default_convert``: numpy arrays and
    numbers become tensors, containers are converted field by field."""
    if isinstance(item, np.ndarray) and item.dtype.kind not in "USO" or \
            isinstance(item, np.generic):
        return _as_batch(np.asarray(item))
    if isinstance(item, Mapping):
        fields = {k: default_convert(v) for k, v in item.items()}
        try:
            return type(item)(fields)
        except TypeError:
            return fields
    if isinstance(item, tuple) and hasattr(item, "_fields"):
        return type(item)(*(default_convert(v) for v in item))
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return [default_convert(v) for v in item]
    return item


# ---------------------------------------------------------------------------- loader
class DataLoader(Generic[T]):
    """Iterates over ``dataset`` in batches (``torch.utils.data.DataLoader``, in process).

    Args:
        dataset: a map-style ``Dataset`` (anything with ``__getitem__`` and ``__len__``) or an
            ``IterableDataset``.
        batch_size: items per batch; ``None`` yields the items one by one, uncollated.
        shuffle: a new random order every epoch (from ``generator``, else fusegrad's global
            seed, ``fusegrad.manual_seed``).
        sampler, batch_sampler: custom index orders, as in torch.
        num_workers: only 0 (loading runs in the calling process).
        collate_fn: turns a list of items into a batch (default: ``default_collate``).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        generator: a ``fusegrad.Generator`` for shuffling.
    """

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Iterable[int] | None = None,
                 batch_sampler: Iterable[list[int]] | None = None, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn: Any = None,
                 generator: Generator | None = None, **unsupported: Any):
        if num_workers != 0:
            raise ValueError(f"DataLoader: num_workers={num_workers} is not supported: fusegrad "
                             "loads batches in the calling process; use num_workers=0")
        if unsupported:
            raise TypeError(f"DataLoader: unsupported arguments {sorted(unsupported)}")
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self.timeout, self.worker_init_fn, self.generator = timeout, worker_init_fn, generator
        self.collate_fn = collate_fn
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            if shuffle or sampler is not None or batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified "
                                 "shuffle, sampler and batch_sampler")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if sampler is None and not self._iterable:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else \
                SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler

    def __iter__(self) -> Iterator[Any]:
        collate = self.collate_fn
        if self._iterable:
            yield from self._iterate_stream(collate or default_collate)
        elif self.batch_sampler is None:
            for i in self.sampler:  # type: ignore[union-attr]
                yield (collate or default_convert)(self.dataset[i])
        else:
            fast = collate is None and isinstance(self.dataset, TensorDataset)
            for indices in self.batch_sampler:
                if fast:   # the same batch default_collate makes, gathered in one go
                    yield list(self.dataset.batch(indices))
                else:
                    yield (collate or default_collate)([self.dataset[i] for i in indices])

    def _iterate_stream(self, collate: Callable[[list[Any]], Any]) -> Iterator[Any]:
        if self.batch_size is None:
            yield from map(self.collate_fn or default_convert, self.dataset)
            return
        batch: list[Any] = []
        for item in self.dataset:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch and not self.drop_last:
            yield collate(batch)

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        return len(self.sampler)  # type: ignore[arg-type]
