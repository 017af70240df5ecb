"""Collective operations across processes, as the IR's ``allreduce`` op runs them.

The IR and the backends call :func:`allreduce_into`; which processes take part is decided by a
*communicator* that ``fusegrad.distributed.init_process_group`` installs (MPI's world). Without
one there is a single process and an all-reduce returns its input. Every process runs the same
programs in the same order, so their collectives meet.
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np

REDUCE_OPS = ("sum", "avg", "max", "min", "product")


class Communicator(Protocol):
    """What the IR needs of a process group."""

    size: int

    def allreduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        """``recv = op(send of every process)``, elementwise; ``op`` is one of ``REDUCE_OPS``."""


class Stats:
    """Time spent in collectives in this process (``fusegrad.distributed`` reports it)."""

    calls = 0
    seconds = 0.0
    bytes = 0


STATS = Stats()
_COMM: list[Communicator | None] = [None]


def set_communicator(comm: Communicator | None) -> None:
    """Install the process group the IR's collectives run on (None: a single process)."""
    _COMM[0] = comm


def world_size() -> int:
    return 1 if _COMM[0] is None else _COMM[0].size


def allreduce_into(x: np.ndarray, out: np.ndarray, op: str) -> None:
    """Write the ``op``-reduction of ``x`` over every process into ``out`` (same shape)."""
    comm = _COMM[0]
    src = np.ascontiguousarray(x)
    if comm is None or comm.size == 1:
        np.copyto(out, src)
        return
    t0 = time.perf_counter()
    if out.flags.c_contiguous:
        comm.allreduce(src, out, op)
    else:
        recv = np.empty_like(src)
        comm.allreduce(src, recv, op)
        np.copyto(out, recv)
    STATS.calls += 1
    STATS.bytes += src.nbytes
    STATS.seconds += time.perf_counter() - t0


def allreduce(x: np.ndarray, op: str) -> np.ndarray:
    """The ``op``-reduction of ``x`` over every process, as a new array."""
    out = np.empty_like(np.asarray(x))
    allreduce_into(np.asarray(x), out, op)
    return out
