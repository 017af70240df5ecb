"""The on-disk kernel cache: reuse across processes, concurrent writers, damaged entries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from fusegrad.backends.numba_cpu import STATS, cache, cache_dir
from fusegrad.ir import ops

_SCRIPT = """
import json
import numpy as np
from fusegrad.backends.interpreter import evaluate
from fusegrad.backends.numba_cpu import STATS, compile_schedule
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.schedule import Kernel, Load, Schedule
from fusegrad.ir.view import View

x = ops.buffer(Buffer.from_array(np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)))
h = ops.unary("exp", x)
m = ops.reduce("sum", h, (1,))
y = ops.binary("div", h, ops.expand(m, (3, 4)))
k1 = Kernel("k_exp", (3, 4), (), (h,), {x: Load(x, View.contiguous((3, 4)))}, (h,))
k2 = Kernel("k_normalise", (3, 4), (1,), (m, y), {h: Load(h, View.contiguous((3, 4)))}, (y,))
program = compile_schedule(Schedule([k1, k2], [x], [y]))
got = program.run([x.attrs[0].data])[0].reshape(3, 4)
print(json.dumps({"ok": bool(np.allclose(got, evaluate([y])[0], rtol=1e-6)),
                  "compiled": STATS.kernels_compiled, "loaded": STATS.kernels_loaded}))
"""


def _start(folder: Path) -> subprocess.Popen:
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(folder))
    env.pop("FUSEGRAD_CACHE", None)
    return subprocess.Popen([sys.executable, "-c", _SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_concurrent_writers_then_a_process_that_only_loads(tmp_path):
    first, second = _start(tmp_path), _start(tmp_path)   # both write the same two entries
    for result in (_finish(first), _finish(second)):
        assert result["ok"] and result["compiled"] + result["loaded"] == 2
    third = _finish(_start(tmp_path))
    assert third == {"ok": True, "compiled": 0, "loaded": 2}


def _schedule(builder, leaf):
    x = leaf(np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5))
    e = ops.unary("exp", x)
    y = ops.binary("mul", e, ops.expand(ops.reduce("max", e, (1,)), (2, 5)))
    b = builder([x])
    b.kernel("k_scale_by_max", [y], (2, 5), (1,))
    return b.schedule([y])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache folder, and no kernels remembered by this process."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_LOADED", {})
    return tmp_path


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x80\x04garbage" * 7)


@pytest.mark.parametrize("target,how", [
    (".nbi", "truncate"), (".nbi", "garbage"), (".nbc", "truncate"), (".nbc", "garbage"),
    (".py", "truncate"), (".py", "garbage"), (".nbc", "delete"),
])
def test_damaged_entry_is_rebuilt(builder, leaf, check, private_cache, monkeypatch, target, how):
    schedule = _schedule(builder, leaf)
    check(schedule, runs=1)
    folder = cache.kernel_dir()
    files = sorted(folder.glob(f"*{target}")) + sorted((folder / "__pycache__").glob(f"*{target}"))
    assert files, target
    for path in files:
        if how == "delete":
            path.unlink()
        else:
            _corrupt(path, how)

    monkeypatch.setattr(cache, "_LOADED", {})               # as if in a new process
    compiled = STATS.kernels_compiled
    with pytest.warns(RuntimeWarning, match="damaged") if how != "delete" else nullcontext():
        check(schedule, runs=1)
    assert STATS.kernels_compiled == compiled + 1            # rebuilt, not loaded

    monkeypatch.setattr(cache, "_LOADED", {})               # the rebuilt entry loads cleanly
    loaded = STATS.kernels_loaded
    check(schedule, runs=1)
    assert STATS.kernels_loaded == loaded + 1


def test_cache_can_be_disabled(builder, leaf, check, private_cache, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_CACHE", "0")
    compiled = STATS.kernels_compiled
    check(_schedule(builder, leaf), runs=1)
    assert STATS.kernels_compiled == compiled + 1
    assert not any(private_cache.rglob("*.py"))


def test_cache_dir_location(monkeypatch, tmp_path):
    monkeypatch.delenv("FUSEGRAD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "fusegrad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "fusegrad"
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    assert "numba" in cache.cache_key() and "llvmlite" in cache.cache_key()


def test_stats_reset():
    STATS.kernels_loaded += 1
    saved = (STATS.kernels_compiled, STATS.kernels_loaded, STATS.compile_seconds)
    STATS.reset()
    assert (STATS.kernels_compiled, STATS.kernels_loaded, STATS.compile_seconds) == (0, 0, 0.0)
    STATS.kernels_compiled, STATS.kernels_loaded, STATS.compile_seconds = saved


def _two_kernel_schedules(builder, leaf):
    """Two schedules of one kernel each, same arguments (two f32 arrays), different code."""
    x = leaf(np.linspace(-1, 1, 6, dtype=np.float32))
    schedules = []
    for op in ("exp", "neg"):
        y = ops.unary(op, x)
        b = builder([x])
        b.kernel(f"k_{op}_only", [y], (6,))
        schedules.append(b.schedule([y]))
    return schedules


@pytest.mark.parametrize("same_arguments", [True, False])
def test_object_files_swapped_between_kernels_are_rebuilt(builder, leaf, check, private_cache,
                                                          monkeypatch, same_arguments):
    # Numba would run the other kernel's code: with the same arguments silently, with others
    # failing every run with "expected 2 arguments, got 3"
    first, second = _two_kernel_schedules(builder, leaf)
    if not same_arguments:
        second = _schedule(builder, leaf)
    check(first, runs=1)
    check(second, runs=1)
    objects = sorted((cache.kernel_dir() / "__pycache__").glob("*.nbc"))
    assert len(objects) == 2
    a, b = (p.read_bytes() for p in objects)
    objects[0].write_bytes(b)
    objects[1].write_bytes(a)

    monkeypatch.setattr(cache, "_LOADED", {})
    damaged, compiled = STATS.damaged_entries, STATS.kernels_compiled
    with pytest.warns(RuntimeWarning, match="object file holds"):
        check(first, runs=1)
        check(second, runs=1)
    assert STATS.damaged_entries == damaged + 2 and STATS.kernels_compiled == compiled + 2
    monkeypatch.setattr(cache, "_LOADED", {})  # the rebuilt entries load cleanly
    loaded = STATS.kernels_loaded
    check(first, runs=1)
    check(second, runs=1)
    assert STATS.kernels_loaded == loaded + 2


def _restricted() -> dict:
    """subprocess arguments under which permission bits hold: as root, without the capabilities
    that override them (root ignores a read-only mode otherwise)."""
    if os.geteuid() != 0:
        return {}
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2

    def drop() -> None:
        for cap in (cap_dac_override, cap_dac_read_search):
            if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return {"preexec_fn": drop}


def _make_read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def _contents(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def read_only_cache(tmp_path):
    """A cache folder warmed by one process, then made read-only (restored afterwards)."""
    assert _finish(_start(tmp_path))["compiled"] == 2
    _make_read_only(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import sys, tempfile; "
                            "tempfile.TemporaryFile(dir=sys.argv[1])", str(tmp_path)],
                           capture_output=True, **_restricted())
    if probe.returncode == 0:
        pytest.skip("cannot make a folder read-only for a subprocess here")
    yield tmp_path
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def _run_restricted(folder: Path) -> tuple[dict, str]:
    """What ``_SCRIPT`` prints, and its warnings, run over ``folder`` where permissions hold."""
    out = subprocess.run([sys.executable, "-W", "always", "-c", _SCRIPT], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, FUSEGRAD_CACHE_DIR=str(folder)),
                         **_restricted())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_read_only_cache_loads_its_kernels(read_only_cache):
    # a pre-warmed shared install: nothing can be written, everything it holds is loaded
    before = _contents(read_only_cache)
    result, warnings_text = _run_restricted(read_only_cache)
    assert result == {"ok": True, "compiled": 0, "loaded": 2}
    assert "Warning" not in warnings_text
    assert _contents(read_only_cache) == before


@pytest.mark.parametrize("lacking", ["objects", "module and objects"])
def test_read_only_cache_compiles_what_it_lacks_in_memory(read_only_cache, lacking):
    folder = next(read_only_cache.glob("fusegrad*"))
    stem = next(p.stem for p in folder.glob("k_*.py") if "normalise" in p.read_text())
    missing = sorted((folder / "__pycache__").glob(f"{stem}.*"))
    if lacking != "objects":
        missing.append(folder / f"{stem}.py")
    for f in missing:
        f.parent.chmod(0o755)
        f.unlink()
    _make_read_only(read_only_cache)
    result, warnings_text = _run_restricted(read_only_cache)
    assert result == {"ok": True, "compiled": 1, "loaded": 1}
    assert warnings_text.count("is read-only and lacks some kernels") == 1
    assert "damaged" not in warnings_text


def test_folder_access(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path / "new"))
    assert cache.folder_access() == "write" and cache.kernel_dir().is_dir()
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    assert cache.folder_access() is None
