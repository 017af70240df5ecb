"""Buffer: the storage behind a realized value (a flat, contiguous numpy array)."""
from __future__ import annotations

import numpy as np


class Buffer:
    """A flat contiguous array holding one realized value.

    The same Buffer object can be rebound to a new array (``data``) when the value it holds is
    replaced; identity is what IR leaves refer to.
    """

    __slots__ = ("shape", "dtype", "data", "owner", "source", "__weakref__")

    def __init__(self, shape: tuple[int, ...], dtype: str, data: np.ndarray | None = None):
        self.shape = tuple(shape)
        self.dtype = dtype
        if data is not None:
            assert data.ndim == 1 and data.flags.c_contiguous and data.dtype.name == dtype
        self.data = data
        self.owner = None  # weakref to the leaf Tensor that requires grad and owns it, if any
        self.source = None  # the expression this buffer realized, kept when gradients need it

    @staticmethod
    def from_array(array: np.ndarray) -> "Buffer":
        arr = np.require(array, requirements='C')
        return Buffer(arr.shape, arr.dtype.name, arr.reshape(-1))

    def numpy(self) -> np.ndarray:
        assert self.data is not None
        return self.data.reshape(self.shape)

    def __repr__(self) -> str:
        return f"Buffer({self.dtype}{list(self.shape)} @0x{id(self):x})"
