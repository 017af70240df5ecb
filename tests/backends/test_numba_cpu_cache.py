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
