"""Disk cache of generated CUDA modules: ``<cache_dir>/<key>-cuda<...>/c_<stem>.py``.

Each module is a real file imported under a name derived from its stem (Numba's own
``cache=True`` needs a source file and a stable module name: NUMBA-NOTES 2 and 3), so on a GPU
numba-cuda also keeps the compiled code beside it. An entry is trusted only if its code lines
hash to the hash its name was made from; anything else (a truncated or edited file, a file that
does not import, one without the kernel function) is a miss: the entry is deleted and written
again, or, where the folder cannot be written, the module is built in memory.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...ir.device import simulator_enabled
from ...lru import LRUCache
from ..numba_cpu.cache import _write_atomic, cache_dir, cache_enabled, cache_key
from ..numba_cpu.render import code_lines
from .render import CudaKernelSource


@dataclass
class CudaCacheStats:
    """Modules of this process: written to disk, loaded from disk, damaged entries replaced."""

    written: int = 0
    loaded: int = 0
    damaged: int = 0


STATS = CudaCacheStats()
_LOADED: LRUCache[str, Any] = LRUCache(4096)


def cuda_cache_key() -> str:
    """The CPU toolchain's key, plus numba-cuda's version and whether the simulator runs."""
    try:
        version = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    return f"{cache_key()}-cuda{version}{'-sim' if simulator_enabled() else ''}"


def module_dir() -> Path:
    return cache_dir() / cuda_cache_key()


def entry_stem(ks: CudaKernelSource) -> str:
    return "c_" + hashlib.sha256(f"{ks.hash}:{cuda_cache_key()}".encode()).hexdigest()[:32]


def _trusted(path: Path, ks: CudaKernelSource) -> bool:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return hashlib.sha256(code_lines(text).encode()).hexdigest() == ks.hash


def _import(path: Path, name: str, function: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module       # before it runs: Numba's cache finds the module by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return _kernel(module, function)


def _kernel(module: types.ModuleType, function: str) -> Any:
    if simulator_enabled():  # the GPU's IEEE math, not Python's exceptions
        from . import simmath
        module.math = simmath  # type: ignore[attr-defined]
    return getattr(module, function)


def _in_memory(ks: CudaKernelSource, name: str) -> Any:
    module = types.ModuleType(name)
    sys.modules[name] = module
    # without ``__file__`` the module's CACHE is False: numba-cuda needs a file to cache
    exec(compile(ks.source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - our module
    return _kernel(module, ks.function)


def load_kernel(ks: CudaKernelSource) -> Any:
    """The ``@cuda.jit`` dispatcher of ``ks``: from memory, from the disk cache, or written now."""
    found = _LOADED.get(ks.hash)
    if found is not None:
        return found
    stem = entry_stem(ks)
    name = f"_fusegrad_cuda_{stem}"
    if not cache_enabled():
        fn = _in_memory(ks, name)
    else:
        folder = module_dir()
        path = folder / f"{stem}.py"
        fn = None
        if path.exists():
            if _trusted(path, ks):
                try:
                    fn = _import(path, name, ks.function)
                    STATS.loaded += 1
                except Exception:  # noqa: BLE001 - any failure: a damaged entry, a miss
                    fn = None
            if fn is None:
                STATS.damaged += 1
                path.unlink(missing_ok=True)
        if fn is None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, ks.source)
                fn = _import(path, name, ks.function)
                STATS.written += 1
            except OSError:   # a folder we cannot write: build the module in memory
                fn = _in_memory(ks, name)
    _LOADED[ks.hash] = fn
    return fn


def forget_loaded() -> None:
    """Drop the in-memory modules (tests: the next load reads the disk)."""
    _LOADED.clear()
