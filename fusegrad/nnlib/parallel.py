"""``nn.parallel.DistributedDataParallel``: the same model on every process, gradients averaged.

Each process (an MPI rank, see ``fusegrad.distributed``) runs the model on its share of the
batch; after every ``backward()`` the parameters' gradients are averaged over the processes,
so every optimizer step sees the gradient of the whole batch and the replicas stay equal.

Gradients are averaged in buckets, as torch does: the parameters, last registered first (the
order backward produces their gradients), are packed into flat buckets of at most
``bucket_cap_mb`` megabytes (the first of at most 1 MB), and each bucket is one all-reduce. The
all-reduce is an op of the graph (``allreduce``), so under ``fusegrad.compile`` a DDP training
step is still one program, with fusion stopping at each all-reduce and resuming after it.
BatchNorm statistics stay local to each process, as in torch's default.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from .. import distributed as dist
from ..tracer import functions as F
from ..tracer.creation import zeros_like
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

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0, broadcast_buffers: bool = True, bucket_cap_mb: float = 25.0,
                 find_unused_parameters: bool = False, **_: Any):
        super().__init__()
        self.module = module
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self.world_size = dist.get_world_size()
        params = [p for p in module.parameters() if p.requires_grad]
        self._buckets = _buckets(params[::-1], bucket_cap_mb)
        if self.world_size > 1:
            for t in [*module.parameters(), *(module.buffers() if broadcast_buffers else ())]:
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
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate gradients locally; the first one after it
        averages everything accumulated."""
        before = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = before

    def _after_backward(self, leaves: list[Tensor]) -> None:
        if not self.require_backward_grad_sync or self.world_size == 1:
            return
        mine = {id(p) for bucket in self._buckets for p in bucket}
        if not any(id(leaf) in mine for leaf in leaves):
            return  # a backward of another model
        grads = []
        with no_grad():
            for bucket in self._buckets:
                # a parameter without a gradient here counts as zeros, so that every process
                # reduces the same buckets and ends with the same gradients
                flat = F.cat([(p.grad if p.grad is not None else zeros_like(p)).reshape(-1)
                              for p in bucket])
                dist.all_reduce(flat, dist.ReduceOp.AVG)
                offset = 0
                for p in bucket:
                    part = flat[offset:offset + p.numel()].reshape(p.shape)
                    offset += p.numel()
                    if p.grad is None:
                        p.grad = tracer_state.mark_state(part.clone())
                    else:
                        p.grad.copy_(part)
                    grads.append(p.grad)
        if not tracer_state.tracing():
            # every process runs its all-reduces here, in the same order
            tracer_state.realize(*grads)


def _buckets(params: list[Tensor], cap_mb: float) -> list[list[Tensor]]:
    """``params`` in order, packed into buckets of at most ``cap_mb`` MB (the first of at most
    ``FIRST_BUCKET_MB``); a parameter larger than the cap is a bucket of its own."""
    buckets: list[list[Tensor]] = []
    size, cap = 0, min(FIRST_BUCKET_MB, cap_mb) * 2**20
    for p in params:
        nbytes = p.numel() * p.element_size()
        if buckets and buckets[-1] and size + nbytes <= cap:
            buckets[-1].append(p)
            size += nbytes
            continue
        if buckets:
            cap = cap_mb * 2**20
        buckets.append([p])
        size = nbytes
    return buckets
