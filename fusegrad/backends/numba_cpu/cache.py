"""The on-disk kernel cache: generated modules as files, Numba's compiled objects beside them.

Layout: ``<cache_dir()>/<key>/k_<hash>.py`` with Numba's index and object files in
``<key>/__pycache__/``. ``key`` names fusegrad, numba, llvmlite, Python and the host CPU, so a
new toolchain or machine never reads old objects. A module is imported under a name derived from
its hash, registered in ``sys.modules`` before it runs: Numba's cached objects refer to it by that
name (NUMBA-NOTES fact 3).

A damaged entry (truncated or garbage files, a half-written module) is a miss: its files are
deleted and the kernel is written and compiled again. ``FUSEGRAD_CACHE=0`` keeps everything in
memory (``cache=False``).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import linecache
import os
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding
import numba
import numpy as np
from numba.core import errors as numba_errors
from numba.core.dispatcher import Dispatcher

from .codegen import KernelSource, code_lines


@dataclass
class CacheStats:
    """Counters over this process.

    Attributes:
        kernels_compiled: kernels Numba compiled (no usable cached object).
        kernels_loaded: kernels loaded from Numba's on-disk cache.
        kernels_reused: kernels already loaded earlier in this process.
        compile_seconds: wall time spent compiling.
        load_seconds: wall time spent loading cached kernels.
        damaged_entries: cache entries found damaged, deleted and rebuilt.
    """

    kernels_compiled: int = 0
    kernels_loaded: int = 0
    kernels_reused: int = 0
    compile_seconds: float = 0.0
    load_seconds: float = 0.0
    damaged_entries: int = 0

    def reset(self) -> None:
        """Set every counter back to zero."""
        for name, value in vars(CacheStats()).items():
            setattr(self, name, value)


STATS = CacheStats()


def reset_stats() -> None:
    """Zero ``STATS``."""
    STATS.reset()


def cache_enabled() -> bool:
    """False when ``FUSEGRAD_CACHE=0``: kernels are compiled in memory only."""
    return os.environ.get("FUSEGRAD_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Root of the kernel cache: ``$FUSEGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/fusegrad``, else
    ``~/.cache/fusegrad``."""
    explicit = os.environ.get("FUSEGRAD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fusegrad"


_KEY: str | None = None


def cache_key() -> str:
    """Folder name of this toolchain and machine inside ``cache_dir()``."""
    global _KEY
    if _KEY is None:
        try:
            version = importlib.metadata.version("fusegrad")
        except importlib.metadata.PackageNotFoundError:
            version = "dev"
        py = f"py{sys.version_info.major}{sys.version_info.minor}"
        cpu = llvmlite.binding.get_host_cpu_name()
        _KEY = f"fusegrad{version}-numba{numba.__version__}-llvmlite{llvmlite.__version__}-{py}-{cpu}"
    return _KEY


def kernel_dir() -> Path:
    """The folder holding this toolchain's kernels."""
    return cache_dir() / cache_key()


def entry_name(ks: KernelSource) -> str:
    """File stem of a kernel: its source hash taken together with the cache key."""
    return "k_" + hashlib.sha256(f"{ks.hash}:{cache_key()}".encode()).hexdigest()[:32]


def _signature(arg_dtypes: tuple[str, ...]) -> tuple:
    return tuple(numba.types.Array(numba.from_dtype(np.dtype(dt)), 1, "C") for dt in arg_dtypes)


# Errors that mean the generated code itself is wrong: recompiling would fail the same way.
_CODE_ERRORS = (numba_errors.TypingError, numba_errors.LoweringError, numba_errors.UnsupportedError)

_LOADED: dict[tuple[str, tuple[str, ...]], Dispatcher] = {}


def load_kernel(ks: KernelSource, arg_dtypes: tuple[str, ...]) -> Dispatcher:
    """The compiled dispatcher of ``ks`` for 1-D contiguous arrays of ``arg_dtypes``.

    Loads Numba's cached object when there is a good one, compiles (and caches) otherwise, and
    updates ``STATS``. Never fails because of a damaged cache entry.
    """
    memo_key = (ks.hash, arg_dtypes)
    if memo_key in _LOADED:
        STATS.kernels_reused += 1
        return _LOADED[memo_key]
    sig = _signature(arg_dtypes)
    if not cache_enabled():
        fn = _compile_in_memory(ks, sig)
    elif not _usable_folder():
        warnings.warn(f"fusegrad: kernel cache folder {kernel_dir()} is not writable; compiling in "
                      "memory", RuntimeWarning, stacklevel=2)
        fn = _compile_in_memory(ks, sig)
    else:
        fn = None
        for _ in range(2):
            try:
                fn = _load_from_disk(ks, sig)
                break
            except _CODE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure means a damaged entry
                STATS.damaged_entries += 1
                warnings.warn(f"fusegrad: kernel cache entry {entry_name(ks)} was damaged "
                              f"({type(exc).__name__}: {exc}); rebuilding it", RuntimeWarning,
                              stacklevel=2)
                purge(ks)
        if fn is None:
            fn = _compile_in_memory(ks, sig)
    _LOADED[memo_key] = fn
    return fn


def purge(ks: KernelSource) -> None:
    """Delete a kernel's module and every file Python or Numba cached for it."""
    folder = kernel_dir()
    stem = entry_name(ks)
    sys.modules.pop(_module_name(stem), None)
    paths = [folder / f"{stem}.py"]
    pycache = folder / "__pycache__"
    if pycache.is_dir():
        paths.extend(pycache.glob(f"{stem}.*"))
    for path in paths:
        try:
            path.unlink()
        except OSError:  # already gone (another process purged it) or not ours to delete
            pass


def _usable_folder() -> bool:
    folder = kernel_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _module_name(stem: str) -> str:
    return f"_fusegrad_kernels_{stem}"


def _write_atomic(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` unless a file is already there; readers never see half of it.

    ``os.link`` does not replace an existing file, so a concurrent writer of the same entry leaves
    the first file (and its modification time, which Numba's index checks) in place.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _load_from_disk(ks: KernelSource, sig: tuple) -> Dispatcher:
    stem = entry_name(ks)
    path = kernel_dir() / f"{stem}.py"
    expected = code_lines(ks.source)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = None
    if text is not None and code_lines(text) != expected:
        raise ValueError(f"{path.name} does not hold the kernel's code")
    if text is None:
        _write_atomic(path, ks.source)
        text = path.read_text()
        if code_lines(text) != expected:
            raise ValueError(f"{path.name} does not hold the kernel's code")
    name = _module_name(stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(compile(text, str(path), "exec"), module.__dict__)  # noqa: S102 - our generated kernel
        fn = getattr(module, ks.function)
        return _compile(fn, sig)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _compile_in_memory(ks: KernelSource, sig: tuple) -> Dispatcher:
    name = _module_name(f"mem_{ks.hash[:32]}")
    filename = f"<fusegrad kernel {ks.name} {ks.hash[:12]}>"
    text = ks.source.replace("cache=True", "cache=False")
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 - our generated kernel
    return _compile(getattr(module, ks.function), sig)


def _compile(fn: Dispatcher, sig: tuple) -> Dispatcher:
    """Compile (or load) ``fn`` for ``sig`` and count which of the two happened."""
    start = time.perf_counter()
    fn.compile(sig)
    elapsed = time.perf_counter() - start
    if sum(fn.stats.cache_hits.values()) > 0:
        STATS.kernels_loaded += 1
        STATS.load_seconds += elapsed
    else:
        STATS.kernels_compiled += 1
        STATS.compile_seconds += elapsed
    return fn
