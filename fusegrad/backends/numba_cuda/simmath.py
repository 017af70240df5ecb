"""``math`` as the GPU computes it, for kernels run by Numba's CUDA simulator.

On the GPU, ``math.log(0.0)`` is ``-inf`` and ``math.exp(1000.0)`` is ``inf`` (IEEE results);
Python's ``math`` raises instead. Under the simulator the generated modules' ``math`` is this
module, so kernels give the values they give on the GPU (and on the CPU backend).
"""
from __future__ import annotations

import math as _math

import numpy as np


# numpy's ufuncs give IEEE results (inf, nan) where Python's math raises
exp, log, sqrt, sin, cos, tanh = np.exp, np.log, np.sqrt, np.sin, np.cos, np.tanh
pow = np.power  # noqa: A001 - the name math gives it


def erf(x):
    return _math.erf(x) if x == x else x
