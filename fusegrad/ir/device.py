"""Where a Buffer's array lives: host memory (numpy) or a CUDA device (a Numba device array).

A Buffer's device is read from its array, so every layer that makes Buffers (realization,
replays, checkpoints) gets it right without being told. ``numba.cuda`` is imported only when a
CUDA device is asked for: the CPU path never pays for it. Under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before ``numba`` is imported) the device arrays are the
simulator's and everything else is the same.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import numpy as np

CPU = "cpu"
CUDA0 = "cuda:0"

INSTALL_HINT = ("install the CUDA extra (pip install 'fusegrad[cuda]': numba-cuda and the NVIDIA "
                "runtime wheels) on a machine with an NVIDIA GPU and driver, or set "
                "NUMBA_ENABLE_CUDASIM=1 before importing fusegrad to run on Numba's CUDA simulator")


def simulator_enabled() -> bool:
    """Whether ``numba.cuda`` is (or, imported now, would be) Numba's CUDA simulator.

    Once imported, the module itself tells: Numba reads its configuration again at every
    compilation, so ``config.ENABLE_CUDASIM`` can change after the choice was made."""
    cuda = sys.modules.get("numba.cuda")
    if cuda is not None and hasattr(cuda, "to_device"):
        return cuda.to_device.__module__.startswith("numba.cuda.simulator")
    from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


@lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str, int]:
    """(available, why not, device count) of the CUDA target, found once per process."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        return False, f"numba.cuda cannot be imported ({exc}); {INSTALL_HINT}", 0
    if not simulator_enabled():
        try:
            import numba_cuda  # noqa: F401 - the maintained CUDA target (numba's own is deprecated)
        except ImportError:
            return False, f"numba-cuda is not installed; {INSTALL_HINT}", 0
    try:
        if not cuda.is_available():
            return False, (f"no usable CUDA GPU and driver were found "
                           f"({_detect_error(cuda)}); {INSTALL_HINT}"), 0
        return True, "", len(cuda.gpus)
    except Exception as exc:  # noqa: BLE001 - whatever the driver says, CUDA is not usable
        return False, f"the CUDA driver failed ({type(exc).__name__}: {exc}); {INSTALL_HINT}", 0


def _detect_error(cuda: Any) -> str:
    try:
        cuda.detect()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {' '.join(str(exc).split()).rstrip(' :')}"
    return "numba.cuda.is_available() is False"


def require_cuda() -> Any:
    """``numba.cuda``, or a RuntimeError saying why CUDA is not available and how to get it."""
    ok, why, _ = cuda_status()
    if not ok:
        raise RuntimeError(f"fusegrad: CUDA is not available: {why}")
    from numba import cuda
    return cuda


def is_device_array(data: Any) -> bool:
    """Whether ``data`` is a CUDA device array (not a numpy array)."""
    return data is not None and not isinstance(data, np.ndarray) and \
        hasattr(data, "copy_to_host")


def array_device(data: Any) -> str:
    """``cuda:0`` for a device array, ``cpu`` otherwise."""
    return CUDA0 if is_device_array(data) else CPU


def memory_range(data: Any) -> tuple[int, int]:
    """The addresses ``[start, end)`` of an array's elements: a host array's, a device array's
    (device addresses), or, under the simulator, the host array it wraps."""
    wrapped = getattr(data, "_ary", None) if is_device_array(data) else data
    if isinstance(wrapped, np.ndarray):
        start = wrapped.__array_interface__["data"][0]
    else:
        start = data.device_ctypes_pointer.value or 0
    return start, start + data.nbytes


def to_device(array: np.ndarray) -> Any:
    """A device copy of a flat host array."""
    return require_cuda().to_device(np.ascontiguousarray(array))


def to_host(data: Any) -> np.ndarray:
    """A host array with ``data``'s values (``data`` itself when it is already on the host)."""
    if is_device_array(data):
        return data.copy_to_host()
    return data


def device_empty(size: int, dtype: str) -> Any:
    """An uninitialised flat device array."""
    return require_cuda().device_array(size, np.dtype("bool" if dtype == "bool" else dtype))


def copy_array(data: Any) -> Any:
    """A new array with ``data``'s values, on ``data``'s device."""
    if not is_device_array(data):
        return data.copy()
    out = device_empty(data.shape[0], data.dtype.name)
    if data.shape[0]:
        out.copy_to_device(data)
    return out
