"""The CUDA backend: the loop nests of ``backends/lowering`` printed as ``numba.cuda.jit``
kernels (cached on disk), run on device buffers by a launch loop."""
from .program import CudaProgram, compile_schedule
from .render import CudaKernelSource, kernel_source

__all__ = ["CudaKernelSource", "CudaProgram", "compile_schedule", "kernel_source"]
