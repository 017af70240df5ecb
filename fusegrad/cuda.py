"""``fusegrad.cuda``: torch.cuda's questions about the GPU, answered by the numba_cuda backend.

CUDA is available when ``numba-cuda`` (the ``fusegrad[cuda]`` extra) finds an NVIDIA GPU and
driver, or when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before ``import
fusegrad``: kernels run as Python threads, for tests). ``unavailable_reason()`` says why not.
"""
from __future__ import annotations

from .ir.device import cuda_status, require_cuda, simulator_enabled


def is_available() -> bool:
    """Whether tensors can be put on ``'cuda'``."""
    return cuda_status()[0]


def device_count() -> int:
    """How many GPUs the CUDA target sees (0 when it is not available)."""
    return cuda_status()[2]


def unavailable_reason() -> str:
    """Why ``is_available()`` is False, and how to fix it ("" when it is True)."""
    return cuda_status()[1]


def is_simulator() -> bool:
    """Whether kernels run on Numba's CUDA simulator rather than a GPU."""
    return simulator_enabled()


def current_device() -> int:
    """The GPU in use: always 0 (fusegrad runs on one GPU)."""
    require_cuda()
    return 0


def get_device_name(device: int = 0) -> str:
    """The name of GPU ``device``."""
    cuda = require_cuda()
    if simulator_enabled():
        return "Numba CUDA simulator"
    name = cuda.gpus[device].name
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize() -> None:
    """Wait for every kernel launched so far to finish."""
    require_cuda().synchronize()
