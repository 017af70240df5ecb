"""Checks of values on the host that a program cannot make itself, as compiled kernels.

A compiled training step reads its class indices from each call's arguments; out-of-range
indices would silently pick no class, so every replay checks them first. Numpy's ``min`` and
``max`` cost ~10 µs right after a step's kernels have run (cold caches); this one-pass kernel,
loaded through the kernel cache like any other, costs ~2 µs.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cache import load_kernel
from .render import KernelSource, source_hash

_IN_RANGE = '''"""fusegrad check: every value in [bounds[0], bounds[1])."""
import numba


@numba.njit(cache=True, nogil=True)
def k_in_range(values, bounds):
    low = bounds[0]
    high = bounds[1]
    for i in range(values.shape[0]):
        v = values[i]
        if v < low or v >= high:
            return False
    return True
'''
_KERNEL = KernelSource(name="k_in_range", source=_IN_RANGE, function="k_in_range",
                       hash=source_hash(_IN_RANGE), parallel=False)


def in_range_kernel(dtype: str) -> Callable[[np.ndarray, np.ndarray], bool]:
    """The compiled ``k(values, bounds)``: whether every element of the flat ``dtype`` array
    ``values`` lies in ``[bounds[0], bounds[1])`` (``bounds``: two int64)."""
    return load_kernel(_KERNEL, (dtype, "int64"))
