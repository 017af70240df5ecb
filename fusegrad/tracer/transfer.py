"""Moving values between devices: ``Tensor.to(device)``/``.cuda()``/``.cpu()``, creation with
``device=``, and ``Module.to(device)`` (through ``state.move_storage``)."""
from __future__ import annotations

from ..errors import CaptureError, DeviceError, with_location
from ..ir import ops
from ..ir.buffer import Buffer
from . import capture
from .device import device, moved
from .grad_mode import is_grad_enabled
from .provenance import user_location
from .tensor import PENDING, WRITES, Tensor, pending_write


def _realized(t: Tensor) -> Buffer:
    """``t``'s buffer, computing ``t`` (and what is pending on its storage) first."""
    from .realize import realize
    if t.node.op != "buffer":
        realize(t)
    elif WRITES and pending_write(t) is not None:
        realize(*PENDING.values())  # another tensor on this storage was updated in place
    return t.node.attrs[0]


def place(t: Tensor, target: device) -> None:
    """Put a tensor just made (no one else holds it) on ``target``."""
    buf = _realized(t)
    buf.data = moved(buf.data, target)


def to_device(t: Tensor, target: device) -> Tensor:
    """``t`` on ``target``: ``t`` itself when it is there, else a copy (a new tensor).

    A copy is data, not a graph edge: a tensor that requires grad moved to another device would
    lose its gradient, so that raises; so does moving inside a ``fusegrad.compile`` trace (the
    copy would be a constant of the compiled program).
    """
    here = t.device
    if here == target:
        return t
    if capture.active() is not None:
        raise CaptureError(with_location(
            f"moving a tensor from {here} to {target} inside a compiled function: move the "
            "arguments and the model before calling it", user_location()))
    if t.requires_grad and is_grad_enabled():
        raise DeviceError(with_location(
            f"moving a tensor that requires grad from {here} to {target} is not differentiable "
            "in fusegrad: move it before it requires grad (or the model, with model.to(device)),"
            " or move t.detach()", user_location()))
    buf = _realized(t)
    return Tensor._from_node(ops.buffer(Buffer(buf.shape, buf.dtype, moved(buf.data, target))))


def move_storage(t: Tensor, target: device) -> None:
    """Move ``t``'s storage to ``target`` in place: ``t`` keeps its identity and its buffer
    (parameters, module buffers and their grads under ``Module.to(device)``)."""
    if t.device == target:
        return
    if capture.active() is not None:
        raise CaptureError(with_location(
            f"moving a module to {target} inside a compiled function", user_location()))
    buf = _realized(t)
    buf.data = moved(buf.data, target)
