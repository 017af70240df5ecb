"""``math`` as the GPU computes it, for kernels run by Numba's CUDA simulator.

On the GPU, ``math.log(0.0)`` is ``-inf`` and ``math.exp(1000.0)`` is ``inf`` (IEEE results);
Python's ``math`` raises instead. Under the simulator the generated modules' ``math`` is this
module, so kernels give the values they give on the GPU (and on the CPU backend).
"""
from __future__ import annotations

import math as _math

import numpy as np


def exp(x):
    return np.exp(x)


def log(x):
    return np.log(x)


def sqrt(x):
    return np.sqrt(x)


def sin(x):
    return np.sin(x)


def cos(x):
    return np.cos(x)


def tanh(x):
    return np.tanh(x)


def pow(x, y):  # noqa: A001 - the name math gives it
    return np.power(x, y)


def erf(x):
    return _math.erf(x) if x == x else x
