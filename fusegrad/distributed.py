"""``torch.distributed`` for fusegrad, over MPI: process groups and collectives.

Run a script on several processes with MPI (``mpiexec -n 4 python train.py``, from the
``fusegrad[mpi]`` extra: ``mpi4py`` over the ``mpich`` wheel). ``init_process_group()`` joins
MPI's world; a script started without ``mpiexec`` is a world of one process and runs unchanged.

``all_reduce`` is an IR op (``allreduce``, an extern: fusion stops before it and resumes after),
so inside ``fusegrad.compile`` it is part of the compiled program; outside, it runs at once, as
torch's does. ``broadcast``, ``all_gather`` and ``barrier`` run at once and cannot be traced.
Once the world has more than one process, an uncaught exception in any of them aborts the whole
job (``MPI_Abort``) instead of leaving the others waiting in a collective. (``sys.exit`` is not
an error to Python: a rank that exits early while the others wait in a collective leaves them
waiting; raise an exception instead.)
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from .errors import FusegradError
from .ir import collective, ops
from .tracer import capture
from .tracer.creation import from_numpy
from .tracer.grad_mode import no_grad
from .tracer.realize import realize
from .tracer.tensor import Tensor

__all__ = ["ReduceOp", "Work", "all_gather", "all_reduce", "barrier", "broadcast",
           "destroy_process_group", "get_rank", "get_world_size", "init_process_group",
           "is_available", "is_initialized"]

_INSTALL = "pip install 'fusegrad[mpi]' (mpi4py and the mpich wheel)"


class ReduceOp:
    """The reductions of ``all_reduce`` (``dist.ReduceOp.SUM`` as in torch)."""

    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"


class _MPIWorld:
    """MPI's ``COMM_WORLD`` as the IR's communicator (``ir/collective.py``)."""

    def __init__(self, comm: Any, mpi: Any):
        self.comm, self.mpi = comm, mpi
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self._ops = {"sum": mpi.SUM, "avg": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN,
                     "product": mpi.PROD}

    def allreduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self.comm.Allreduce(send, recv, op=self._ops[op])
        if op == "avg":
            np.divide(recv, self.size, out=recv, casting="unsafe")


_WORLD: list[_MPIWorld | None] = [None]


def is_available() -> bool:
    """Whether MPI for Python (``mpi4py``) can be imported."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init_process_group(backend: str = "mpi", **_: Any) -> None:
    """Join the MPI world (``mpiexec -n N``; one process without it). Only ``backend="mpi"``
    is provided (``"gloo"`` is taken as MPI too, so torch scripts port unchanged)."""
    if _WORLD[0] is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    if backend not in ("mpi", "gloo"):
        raise ValueError(f"fusegrad.distributed: backend {backend!r} is not provided; "
                         "fusegrad runs its collectives over MPI (backend='mpi')")
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise FusegradError(f"fusegrad.distributed needs MPI: {_INSTALL} ({e})") from None
    world = _WORLD[0] = _MPIWorld(MPI.COMM_WORLD, MPI)
    collective.set_communicator(world)
    if world.size > 1:
        _abort_on_uncaught_exceptions(world)


def _abort_on_uncaught_exceptions(world: _MPIWorld) -> None:
    """An uncaught exception prints as usual, then aborts every process of the job."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        sys.stderr.write(f"fusegrad.distributed: rank {world.rank} failed; aborting the job\n")
        sys.stderr.flush()
        time.sleep(0.5)  # mpiexec forwards output asynchronously: let the traceback reach it
        world.comm.Abort(1)
    sys.excepthook = hook


def is_initialized() -> bool:
    return _WORLD[0] is not None


def _world() -> _MPIWorld:
    if _WORLD[0] is None:
        raise RuntimeError("Default process group has not been initialized, please make sure to "
                           "call init_process_group.")
    return _WORLD[0]


def destroy_process_group() -> None:
    """Leave the process group (MPI itself ends with the process)."""
    _WORLD[0] = None
    collective.set_communicator(None)


def get_rank(group: Any = None) -> int:
    return _world().rank


def get_world_size(group: Any = None) -> int:
    return _world().size


def barrier(group: Any = None) -> None:
    """Wait until every process has reached this call."""
    capture.refuse("distributed.barrier()")
    _world().comm.Barrier()


class Work:
    """What a collective called with ``async_op=True`` returns: fusegrad's collectives have
    finished when the call returns (or, traced, run inside the compiled program)."""

    def wait(self, timeout: Any = None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def all_reduce(tensor: Tensor, op: str = ReduceOp.SUM, group: Any = None,
               async_op: bool = False) -> Work | None:
    """Reduce ``tensor`` elementwise over every process, in place (no gradient flows)."""
    _world()
    with no_grad():
        tensor.copy_(Tensor._from_node(ops.allreduce(tensor.detach().node, op)))
    if capture.active() is None:
        realize(tensor)
    return Work() if async_op else None


def broadcast(tensor: Tensor, src: int, group: Any = None, async_op: bool = False
              ) -> Work | None:
    """Give ``tensor`` the value it has on process ``src``, in place."""
    capture.refuse("distributed.broadcast()")
    world = _world()
    data = np.array(tensor.detach().numpy(), order="C")  # a copy, 0-d kept 0-d
    world.comm.Bcast(data, root=src)
    if world.rank != src:
        with no_grad():
            tensor.copy_(from_numpy(data))
        realize(tensor)
    return Work() if async_op else None


def all_gather(tensor_list: list[Tensor], tensor: Tensor, group: Any = None,
               async_op: bool = False) -> Work | None:
    """Fill ``tensor_list[i]`` with ``tensor`` as process ``i`` has it."""
    capture.refuse("distributed.all_gather()")
    world = _world()
    if len(tensor_list) != world.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors for a world "
                         f"of {world.size} processes")
    data = np.array(tensor.detach().numpy(), order="C")
    out = np.empty((world.size,) + data.shape, data.dtype)
    world.comm.Allgather(data, out)
    with no_grad():
        for t, part in zip(tensor_list, out):
            t.copy_(from_numpy(np.array(part)))
    realize(*tensor_list)
    return Work() if async_op else None
