"""Buffer: the storage behind a realized value (a flat, contiguous numpy array, or a CUDA device
array: ``ir/device.py``)."""
from __future__ import annotations

import itertools
import weakref

import numpy as np

_serial = itertools.count()


class Buffer:
    """A flat contiguous array holding one realized value.

    The same Buffer object can be rebound to a new array (``data``) when the value it holds is
    replaced; identity is what IR leaves refer to.
    """

    __slots__ = ("shape", "dtype", "data", "owner", "source", "serial", "holder", "alias_of",
                 "rng_count", "any_device", "_node", "__weakref__")

    def __init__(self, shape: tuple[int, ...], dtype: str, data: np.ndarray | None = None):
        self.shape = tuple(shape)
        self.dtype = dtype
        if data is not None:
            assert data.ndim == 1, "buffers hold flat arrays"
        self.data = data
        self.owner = None  # weakref to the leaf Tensor that requires grad and owns it, if any
        self.source = None  # the expression this buffer realized, kept when gradients need it
        self.serial = next(_serial)  # creation order (fusegrad.compile tells old from new)
        self.holder = None  # weakref to the Tensor last bound to this buffer
        self.alias_of = None  # the Buffer whose data this one shares (a detached view)
        self.rng_count = 0  # > 0: a random key (seed, offset) covering this many numbers
        self.any_device = False  # a host constant a program on any device may read (a table)
        self._node = None  # weakref to the IR leaf of this buffer

    def root(self) -> "Buffer":
        """The buffer that owns the data this one views."""
        buf = self
        while buf.alias_of is not None:
            buf = buf.alias_of
        return buf

    @staticmethod
    def from_array(array: np.ndarray) -> "Buffer":
        arr = np.require(array, requirements='C')
        return Buffer(arr.shape, arr.dtype.name, arr.reshape(-1))

    @staticmethod
    def mark() -> int:
        """A serial between every Buffer made so far (smaller) and every later one (larger)."""
        return next(_serial)

    def numpy(self) -> np.ndarray:
        """The value as a host array of ``shape`` (a copy when ``data`` is on a GPU)."""
        assert self.data is not None
        from .device import to_host
        return to_host(self.data).reshape(self.shape)

    def __repr__(self) -> str:
        return f"Buffer({self.dtype}{list(self.shape)} @0x{id(self):x})"
