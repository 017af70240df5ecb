"""``nn.parallel.DistributedDataParallel``: the same model on every process, gradients averaged.

Each process (an MPI rank, see ``fusegrad.distributed``) runs the model on its share of the
batch; after every ``backward()`` the parameters' gradients are averaged over the processes,
so every optimizer step sees the gradient of the whole batch and the replicas stay equal.

Gradients are averaged in buckets, as torch does: the parameters of each dtype, last
registered first (the order backward produces their gradients), are packed into flat buckets
that close once they reach 1 MB (the first) or ``bucket_cap_mb`` megabytes, and each bucket is
one all-reduce. The all-reduce is an op of the graph (``allreduce``), so under
``fusegrad.compile`` a DDP training step is still one program, with fusion stopping at each
all-reduce and resuming after it. As in torch, every forward first gives the buffers rank 0's
values (``broadcast_buffers``; BatchNorm normalises with its own batch's statistics, its running
statistics are rank 0's), whether gradients are averaged is decided when the forward runs
(inside or outside :meth:`DistributedDataParallel.no_sync`), and a parameter no rank gave a
gradient keeps ``None``. Under ``fusegrad.compile`` that last is decided when the step is
traced: a parameter without a gradient in the trace gets the average of the others' (zeros if
none had one).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from .. import distributed as dist
from ..tracer import functions as F
from ..tracer.creation import tensor, zeros_like
from ..tracer import state as tracer_state
from ..tracer.grad_mode import no_grad
from ..tracer.tensor import Tensor
from .module import Module

FIRST_BUCKET_MB = 1.0


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the processes of the default group.

    At construction every process takes rank 0's parameters and buffers. ``forward`` runs
    ``module``; the ``backward()`` that follows averages the gradients of ``module``'s
    parameters over the processes (skipped inside :meth:`no_sync`, where they accumulate).
    """

    # a compiled step replays only with the sync decision it was traced with
    _replay_flags = ("require_backward_grad_sync",)

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0, broadcast_buffers: bool = True, bucket_cap_mb: float = 25.0,
                 find_unused_parameters: bool = False, **_: Any):
        super().__init__()
        self.module = module
        self.bucket_cap_mb = bucket_cap_mb
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self._sync_next = True  # the decision of the last forward
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        params = [p for p in module.parameters() if p.requires_grad]
        self._buckets = _buckets(params[::-1], bucket_cap_mb)
        self._param_ids = {id(p) for p in params}
        if self.world_size > 1:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t, 0)
        ref = weakref.ref(self)

        def after_backward(leaves: list[Tensor]) -> None:
            ddp = ref()
            if ddp is None:
                handle.remove()
            else:
                ddp._after_backward(leaves)
        handle = tracer_state.register_post_backward_hook(after_backward)
        self._hook = handle

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._note_forward()
        # a replay of a compiled forward runs no Python: it notes the decision all the same
        tracer_state.add_replay_hook(("ddp forward", id(self)), self._note_forward)
        if self.broadcast_buffers and self.world_size > 1:
            self._sync_buffers()
        return self.module(*args, **kwargs)

    def _note_forward(self) -> None:
        self._sync_next = self.require_backward_grad_sync

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Forwards run inside accumulate their gradients locally; the first forward after it
        (and its backward) averages everything accumulated."""
        before = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        tracer_state.modes_changed()
        try:
            yield
        finally:
            self.require_backward_grad_sync = before
            tracer_state.modes_changed()

    def _sync_buffers(self) -> None:
        """Give every buffer rank 0's value: one sum per dtype, to which the other ranks
        give zeros (an op of the graph, so a compiled forward does it too)."""
        by_dtype: dict[Any, list[Tensor]] = {}
        for b in self.module.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
        with no_grad():
            for group in by_dtype.values():
                flat = F.cat([b.reshape(-1) for b in group])
                flat = flat.clone() if self.rank == 0 else zeros_like(flat)
                dist.all_reduce(flat, dist.ReduceOp.SUM)
                _scatter(flat, group, lambda b, part: b.copy_(part))

    def _after_backward(self, leaves: list[Tensor]) -> None:
        if not self._sync_next or self.world_size == 1:
            return
        if not any(id(leaf) in self._param_ids for leaf in leaves):
            return  # a backward of another model
        tracing = tracer_state.tracing()
        grads = []
        with no_grad():
            for bucket in self._buckets:
                # a parameter without a gradient counts as zeros, and a flag per parameter says
                # whether any rank had one (every rank reduces the same buckets)
                parts = [(p.grad if p.grad is not None else zeros_like(p)).reshape(-1)
                         for p in bucket]
                had = [float(p.grad is not None) for p in bucket]
                flat = F.cat(parts + [tensor(had, dtype=bucket[0].dtype)])
                dist.all_reduce(flat, dist.ReduceOp.AVG)
                used = [True] * len(bucket) if tracing else \
                    (flat[-len(bucket):].numpy() > 0).tolist()

                def write(p: Tensor, part: Tensor, used: Iterator[bool] = iter(used)) -> None:
                    if not next(used):
                        return  # no rank gave it a gradient: it stays None
                    if p.grad is None:
                        p.grad = tracer_state.mark_state(part.clone())
                    else:
                        p.grad.copy_(part)
                    grads.append(p.grad)
                _scatter(flat, bucket, write)
        if not tracing and grads:
            # every process runs its all-reduces here, in the same order
            tracer_state.realize(*grads)


def _scatter(flat: Tensor, tensors: list[Tensor], write: Any) -> None:
    """``write(t, part)`` for each of ``tensors`` with its part of ``flat`` (in order)."""
    offset = 0
    for t in tensors:
        write(t, flat[offset:offset + t.numel()].reshape(t.shape))
        offset += t.numel()


def _buckets(params: list[Tensor], cap_mb: float) -> list[list[Tensor]]:
    """``params`` in order, packed by dtype into buckets that close once they reach their cap:
    ``FIRST_BUCKET_MB`` for the first of each dtype, ``cap_mb`` after; buckets in the order of
    their first parameter (torch's assignment)."""
    buckets: list[list[Tensor]] = []
    open_: dict[Any, tuple[list[Tensor], int, float]] = {}
    for p in params:
        bucket, size, cap = open_.get(p.dtype, ([], 0, min(FIRST_BUCKET_MB, cap_mb) * 2**20))
        bucket.append(p)
        size += p.numel() * p.element_size()
        if size >= cap:
            buckets.append(bucket)
            bucket, size, cap = [], 0, cap_mb * 2**20
        open_[p.dtype] = (bucket, size, cap)
    order = {id(p): i for i, p in enumerate(params)}
    return sorted(buckets + [b for b, _, _ in open_.values() if b], key=lambda b: order[id(b[0])])
