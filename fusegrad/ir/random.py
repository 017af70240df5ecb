"""The counter-based generator behind ``rand`` nodes (splitmix64 of seed and element counter).

Element ``i`` of a rand node with key (seed, offset) is ``uniform(seed, offset + i)``: the same
in every backend, serial or parallel, whatever the order of evaluation.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_MUL = np.uint64(0xD1B54A32D192ED03)


def uniform_numpy(seed: int, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Reference implementation over a whole array."""
    n = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _SEED_MUL + \
            (np.arange(n, dtype=np.uint64) + np.uint64(offset & 0xFFFFFFFFFFFFFFFF))
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    if dtype == "float32":
        out = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        out = (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    return out.reshape(shape)


# Scalar form for generated kernels (Numba): every constant is uint64 so nothing promotes to float.
SCALAR_SOURCE = '''
@njit(cache=True, inline="always")
def _fg_uniform32(seed, counter):
    x = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(counter)
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * np.float32(5.9604644775390625e-08)


@njit(cache=True, inline="always")
def _fg_uniform64(seed, counter):
    x = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(counter)
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * 1.1102230246251565e-16
'''
