"""The on-disk kernel cache: generated modules as files, Numba's compiled objects beside them.

Layout: ``<cache_dir()>/<key>/k_<hash>.py`` with Numba's index and object files in
``<key>/__pycache__/``. ``key`` names fusegrad, numba, llvmlite, Python and the host CPU, so a
new toolchain or machine never reads old objects. A module is imported under a name derived from
its hash, registered in ``sys.modules`` before it runs: Numba's cached objects refer to it by that
name (NUMBA-NOTES fact 3).

Numba's objects are found by a locator of our own (``_KernelCache``) instead of Numba's default
ones, which insist on a writable folder: a read-only cache (a pre-warmed shared install) still
loads every kernel it holds, and only kernels missing from it are compiled, in memory. The
source stamp is a hash of the module's bytes, not its modification time, which records when the
entry was last used (``eviction.touch``) so that least recently used entries are evicted past
``FUSEGRAD_CACHE_MAX_MB``.

A damaged entry (truncated or garbage files, a half-written module, an object file of another
kernel) is a miss: its files are deleted and the kernel is written and compiled again.
``FUSEGRAD_CACHE=0`` keeps everything in memory (``cache=False``).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import linecache
import os
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding
import numba
import numpy as np
from numba.core import errors as numba_errors
from numba.core import sigutils
from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
from numba.core.dispatcher import Dispatcher

from ...lru import LRUCache, size_from_env, switch_from_env
from . import eviction
from .render import LENGTH_DTYPE, KernelSource, code_lines


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
        kernels_by_workers: kernels compiled into the disk cache by compile worker processes
            (``workers.compile_ahead``), then loaded here (also counted in ``kernels_loaded``).
        worker_seconds: the workers' time spent compiling them.
    """

    kernels_compiled: int = 0
    kernels_loaded: int = 0
    kernels_reused: int = 0
    compile_seconds: float = 0.0
    load_seconds: float = 0.0
    damaged_entries: int = 0
    kernels_by_workers: int = 0
    worker_seconds: float = 0.0

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
    return switch_from_env("FUSEGRAD_CACHE")


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
    return tuple(numba.types.intp if dt == LENGTH_DTYPE else
                 numba.types.Array(numba.from_dtype(np.dtype(dt)), 1, "C") for dt in arg_dtypes)


# Errors that mean the generated code itself is wrong: recompiling would fail the same way.
_CODE_ERRORS = (numba_errors.TypingError, numba_errors.LoweringError, numba_errors.UnsupportedError)

# Compiled kernels by (source hash, argument dtypes), the least recently used dropped past the
# size (a program holds its own; a dropped kernel is loaded again from Numba's objects on disk).
KERNEL_CACHE_SIZE = 4096
_LOADED: LRUCache[tuple[str, tuple[str, ...]], Dispatcher] = LRUCache(
    size_from_env("FUSEGRAD_KERNEL_CACHE_SIZE", KERNEL_CACHE_SIZE))
_FRESH: list[int] = [0]          # > 0: compile without reading Numba's objects (``fresh_kernels``)
_WARNED: set[Path] = set()       # read-only folders already warned about
_FROM_DISK: set[str] = set()     # hashes of the kernels loaded from Numba's objects on disk


def in_memory(ks: KernelSource, arg_dtypes: tuple[str, ...]) -> bool:
    """Whether ``load_kernel(ks, arg_dtypes)`` would return a kernel already in memory."""
    return (ks.hash, arg_dtypes) in _LOADED


def on_disk(ks: KernelSource) -> bool:
    """Whether the disk cache seems to hold Numba's objects of ``ks`` (its module and an index;
    a load may still find the entry damaged or for other argument types, and compile)."""
    folder = kernel_dir()
    stem = entry_name(ks)
    return (folder / f"{stem}.py").is_file() and \
        any((folder / "__pycache__").glob(f"{stem}.*.nbi"))


def load_kernel(ks: KernelSource, arg_dtypes: tuple[str, ...]) -> Dispatcher:
    """The compiled dispatcher of ``ks`` for 1-D contiguous arrays of ``arg_dtypes``.

    Loads Numba's cached object when there is a good one, compiles (and caches) otherwise, and
    updates ``STATS``. Never fails because of a damaged cache entry. In a read-only cache folder
    a kernel that is not there is compiled in memory.
    """
    memo_key = (ks.hash, arg_dtypes)
    loaded = _LOADED.get(memo_key)
    if loaded is not None:
        STATS.kernels_reused += 1
        return loaded
    sig = _signature(arg_dtypes)
    access = folder_access() if cache_enabled() else None
    fn = None
    if access is None and cache_enabled():
        warnings.warn(f"fusegrad: kernel cache folder {kernel_dir()} cannot be used; compiling in "
                      "memory", RuntimeWarning, stacklevel=2)
    elif access is not None:
        for _ in range(2):
            try:
                fn = _load_from_disk(ks, sig, writable=access == "write")
                break
            except _CODE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure means a damaged entry
                STATS.damaged_entries += 1
                warnings.warn(f"fusegrad: kernel cache entry {entry_name(ks)} was damaged "
                              f"({type(exc).__name__}: {exc}); rebuilding it", RuntimeWarning,
                              stacklevel=2)
                purge(ks)
        if fn is None and access == "read":
            _warn_read_only()
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


def forget(ks: KernelSource) -> None:
    """Purge a kernel from the disk cache and from this process (its next load compiles it)."""
    purge(ks)
    _FROM_DISK.discard(ks.hash)
    for memo_key in [k for k in _LOADED if k[0] == ks.hash]:
        del _LOADED[memo_key]


def _warn_read_only() -> None:
    """Say once per folder that a read-only cache lacks kernels (compiled in every process)."""
    folder = kernel_dir()
    if folder not in _WARNED:
        _WARNED.add(folder)
        warnings.warn(f"fusegrad: kernel cache folder {folder} is read-only and lacks some "
                      "kernels; compiling them in memory", RuntimeWarning, stacklevel=3)


def was_loaded(ks: KernelSource) -> bool:
    """Whether this process loaded the kernel from Numba's objects on disk."""
    return ks.hash in _FROM_DISK


@contextlib.contextmanager
def fresh_kernels() -> Iterator[None]:
    """Within this block kernels are compiled, never loaded from Numba's objects on disk (which
    they still overwrite where the folder is writable)."""
    _FRESH[0] += 1
    try:
        yield
    finally:
        _FRESH[0] -= 1


def folder_access() -> str | None:
    """How this process can use ``kernel_dir()``: ``"write"``, ``"read"`` (a read-only cache: what
    it holds is loaded, nothing is written) or None (no such folder and none can be made).

    Writing is tried, not inferred from permission bits, which root and ACLs override.
    """
    folder = kernel_dir()
    try:
        for d in (folder, folder / "__pycache__"):
            d.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=d).close()
        return "write"
    except OSError:
        return "read" if folder.is_dir() and os.access(folder, os.R_OK | os.X_OK) else None


def _module_name(stem: str) -> str:
    return f"_fusegrad_kernels_{stem}"


def _write_atomic(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` unless a file is already there; readers never see half of it.

    ``os.link`` does not replace an existing file, so a concurrent writer of the same entry leaves
    the first file in place.
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


def _load_from_disk(ks: KernelSource, sig: tuple, writable: bool) -> Dispatcher | None:
    """The kernel through its disk entry (written first if missing); None when it is missing
    and cannot be written."""
    stem = entry_name(ks)
    path = kernel_dir() / f"{stem}.py"
    try:
        text = path.read_text()
    except FileNotFoundError:
        if not writable:
            return None
        _write_atomic(path, ks.source)
        text = path.read_text()
    if code_lines(text) != code_lines(ks.source):
        raise ValueError(f"{path.name} does not hold the kernel's code")
    name = _module_name(stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        # compiled with cache=False, then given our own cache: Numba's would need a writable folder
        exec(compile(_uncached(text), str(path), "exec"), module.__dict__)  # noqa: S102 - our kernel
        fn = getattr(module, ks.function)
        fn._cache = _KernelCache(fn.py_func)
        if _compile(fn, sig):
            _FROM_DISK.add(ks.hash)
            eviction.touch(path)
        return fn
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _uncached(text: str) -> str:
    return text.replace("cache=True", "cache=False")


def _compile_in_memory(ks: KernelSource, sig: tuple) -> Dispatcher:
    name = _module_name(f"mem_{ks.hash[:32]}")
    filename = f"<fusegrad kernel {ks.name} {ks.hash[:12]}>"
    text = _uncached(ks.source)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 - our generated kernel
    fn = getattr(module, ks.function)
    _compile(fn, sig)
    return fn


def _compile(fn: Dispatcher, sig: tuple) -> bool:
    """Compile (or load) ``fn`` for ``sig``, count which of the two happened; True if loaded."""
    start = time.perf_counter()
    fn.compile(sig)
    elapsed = time.perf_counter() - start
    loaded = sum(fn.stats.cache_hits.values()) > 0
    if loaded:
        STATS.kernels_loaded += 1
        STATS.load_seconds += elapsed
    else:
        STATS.kernels_compiled += 1
        STATS.compile_seconds += elapsed
    return loaded


# ---------------------------------------------------------------------------- Numba's objects
class _KernelLocator(_CacheLocator):
    """Numba's objects of a kernel module, in ``__pycache__`` beside it.

    Unlike Numba's own locators it accepts a folder it cannot write (saving then fails, and the
    kernel stays in memory), and its source stamp is the module's content, not its modification
    time (which the size bound uses to record the entry's last use).
    """

    def __init__(self, py_func, py_file: str):
        self._py_file = py_file   # the name Numba's CacheImpl reads in its warnings
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(os.path.dirname(py_file), "__pycache__")

    def ensure_cache_path(self) -> None:
        os.makedirs(self._cache_path, exist_ok=True)

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> bytes:
        with open(self._py_file, "rb") as f:
            return hashlib.sha256(f.read()).digest()

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file: str) -> _KernelLocator:
        return cls(py_func, py_file)


class _KernelCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_KernelLocator]


class _KernelCache(FunctionCache):
    """Numba's per-function cache, with our locator, a check that a loaded object is this
    kernel's, quiet failures to save (a read-only folder) and the written bytes counted against
    the size bound."""

    _impl_class = _KernelCacheImpl

    def load_overload(self, sig, target_context):
        if _FRESH[0]:
            return None
        cres = super().load_overload(sig, target_context)
        if cres is not None:
            args = tuple(sigutils.normalize_signature(sig)[0])
            func = self._py_func
            found = (cres.fndesc.modname, cres.fndesc.qualname, tuple(cres.signature.args))
            if found != (func.__module__, func.__qualname__, args):
                # e.g. object files swapped or copied between entries: Numba would run the
                # other kernel's code with this kernel's arguments
                raise ValueError(f"its object file holds {cres.fndesc.qualname} of "
                                 f"{cres.fndesc.modname} for {len(cres.signature.args)} arguments")
        return cres

    def save_overload(self, sig, data) -> None:
        try:
            super().save_overload(sig, data)
        except OSError:  # a read-only cache: the kernel is kept in memory only
            _warn_read_only()
            return
        folder = Path(self.cache_path)
        files = [Path(self._impl.locator._py_file), *folder.glob(f"{self._impl.filename_base}.*")]
        eviction.note_written(cache_dir(), sum(_size(f) for f in files))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
