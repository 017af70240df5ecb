"""Devices: ``device('cpu')`` and, where the CUDA target works, ``device('cuda')``.

A tensor's device is where its value lives: a realized tensor's buffer holds a numpy array (cpu)
or a CUDA device array (``ir/device.py``), and a pending tensor is on the device of the buffers
it reads. Some host buffers may be read by a program on any device, as torch lets a 0-d CPU
tensor meet CUDA tensors: 0-d values (optimizer hyperparameters, step counts) and fusegrad's own
constant tables (``Buffer.any_device``: index tables, masks, random keys). An op that makes two
other devices meet raises ``DeviceError`` naming both and the user's line, as torch does when
the op is called.

Nothing here costs anything until the first CUDA buffer exists (``CUDA_USED``).
"""
from __future__ import annotations

import weakref
from typing import Any

from ..ir.buffer import Buffer
from ..ir.device import CPU as CPU_NAME
from ..ir.device import CUDA0, array_device, cuda_status, to_device, to_host
from ..errors import DeviceError, with_location
from ..ir.node import Node
from .provenance import user_location


class device:  # noqa: N801 - named like torch.device
    """A device description such as ``device('cpu')`` or ``device('cuda', 0)``."""

    __slots__ = ("type", "index")

    def __init__(self, spec: Any = "cpu", index: int | None = None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index
        text = str(spec)
        if ":" in text:
            text, idx = text.split(":", 1)
            index = int(idx)
        if text not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: "
                               f"{spec}")
        self.type, self.index = text, index

    def __eq__(self, other: object) -> bool:
        try:
            other = device(other)  # type: ignore[arg-type]
        except (RuntimeError, ValueError):
            return False
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self) -> int:
        return hash((self.type, self.index or 0))

    def __repr__(self) -> str:
        idx = f", index={self.index}" if self.index is not None else ""
        return f"device(type='{self.type}'{idx})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = device("cpu")
CUDA_USED = [False]   # set when the first CUDA buffer is made: device checks start then


def check_device(spec: Any) -> device:
    """The device ``spec`` names (None: cpu). CUDA raises, saying why and how to get it, when
    the CUDA target cannot run here; an index past the last GPU raises as torch does."""
    if spec is None:
        return CPU
    dev = device(spec)
    if dev.type == "cuda":
        ok, why, count = cuda_status()
        if not ok:
            raise RuntimeError(f"fusegrad: CUDA is not available: {why}")
        if (dev.index or 0) >= count:
            raise RuntimeError(f"CUDA error: invalid device ordinal (device {dev} asked for, "
                               f"{count} visible)")
        if dev.index:
            raise RuntimeError(f"fusegrad runs on one GPU: {dev} asked for, use cuda:0")
    return dev


def name_of(dev: device) -> str:
    """``cpu`` or ``cuda:0``: how buffers name devices."""
    return CUDA0 if dev.type == "cuda" else CPU_NAME


def as_device(name: str) -> device:
    return device("cuda", 0) if name == CUDA0 else CPU


# ------------------------------------------------------------------ the device of a value
def buffer_device(buf: Buffer) -> str | None:
    """The device whose programs must read ``buf``; None where any device's may."""
    if buf.data is None:
        return None
    name = array_device(buf.data)
    if name == CPU_NAME and (buf.root().any_device or not buf.shape):
        return None
    return name


_NODE_DEVICE: "weakref.WeakKeyDictionary[Node, str | None]" = weakref.WeakKeyDictionary()


def node_device(node: Node) -> str | None:
    """The device of the buffers ``node`` reads (None: only buffers any device may read).

    Raises DeviceError at the first node (in dependency order) that reads two devices."""
    if not CUDA_USED[0]:
        return CPU_NAME
    if node.op == "buffer":
        return buffer_device(node.attrs[0])
    found = _NODE_DEVICE.get(node, False)
    if found is not False:
        return found  # type: ignore[return-value]
    stack = [(node, False)]
    while stack:
        n, expanded = stack.pop()
        if n.op == "buffer" or n in _NODE_DEVICE:
            continue
        if not expanded:
            stack.append((n, True))
            stack.extend((i, False) for i in n.inputs
                         if i.op != "buffer" and i not in _NODE_DEVICE)
            continue
        seen = {d for d in (node_device(i) for i in n.inputs) if d is not None}
        if len(seen) > 1:
            a, b = sorted(seen, reverse=True)
            raise DeviceError(with_location(
                f"Expected all tensors to be on the same device, but found at least two devices, "
                f"{a} and {b}! (in {n.op})", n.loc or user_location()))
        _NODE_DEVICE[n] = seen.pop() if seen else None
    return _NODE_DEVICE[node]


def tensor_device(node: Node) -> device:
    """The ``device`` a tensor holding ``node`` reports."""
    found = node_device(node)
    return as_device(found) if found is not None else CPU


# ------------------------------------------------------------------ moving values
def moved(data: Any, target: device) -> Any:
    """``data`` (a flat array) on ``target``: itself when it is there already, else a copy."""
    if name_of(target) == array_device(data):
        return data
    if target.type == "cuda":
        CUDA_USED[0] = True
        return to_device(data)
    return to_host(data)
