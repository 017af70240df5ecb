"""Devices: the CPU today; asking for CUDA says clearly that it is not available."""
from __future__ import annotations

from typing import Any


class device:  # noqa: N801 - named like torch.device
    """A device description such as ``device('cpu')``."""

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


def check_device(spec: Any) -> device:
    """The device ``spec`` names; CUDA raises until the CUDA backend lands."""
    if spec is None:
        return CPU
    dev = device(spec)
    if dev.type == "cuda":
        raise RuntimeError("fusegrad: CUDA devices are not available yet (no CUDA backend in this "
                           "build); use device('cpu')")
    return dev


class cuda:  # noqa: N801 - mirrors the torch.cuda namespace
    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 0
