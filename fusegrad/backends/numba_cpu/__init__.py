"""The CPU backend: fused kernels generated as Numba source, cached on disk, run by a lean loop."""
from .cache import STATS, CacheStats, cache_dir, reset_stats
from .render import KernelSource, kernel_source
from .program import NumbaProgram, compile_schedule

__all__ = ["STATS", "CacheStats", "KernelSource", "NumbaProgram", "cache_dir", "compile_schedule",
           "kernel_source", "reset_stats"]
