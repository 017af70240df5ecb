"""The disk cache's size bound: FUSEGRAD_CACHE_MAX_MB, least recently used entries evicted."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from fusegrad.backends.numba_cpu import STATS, cache, eviction, kernel_source
from fusegrad.ir import ops


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache folder, no kernels remembered by this process, no size counted yet."""
    monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FUSEGRAD_CACHE_MAX_MB", raising=False)
    monkeypatch.setattr(cache, "_LOADED", {})
    monkeypatch.setattr(eviction, "_ESTIMATE", {})
    return tmp_path


def _schedules(builder, leaf, n: int):
    """``n`` one-kernel schedules with different code, of about one size on disk (float32
    ``exp``, whose helper makes its entry a fifth larger, comes last)."""
    x = leaf(np.linspace(0.5, 1, 8, dtype=np.float32))
    schedules = []
    for op in ("neg", "sqrt", "log", "sin", "cos", "exp")[:n]:
        y = ops.unary(op, x)
        b = builder([x])
        b.kernel(f"k_{op}_of_x", [y], (8,))
        schedules.append(b.schedule([y]))
    return schedules


def _stem(schedule) -> str:
    return cache.entry_name(kernel_source(schedule.items[0], parallel=False))


def _kernels(root) -> dict[str, eviction.Entry]:
    return {e.files[0].name.split(".")[0]: e for e in eviction.scan(root) if e.kind == "kernel"}


def test_cap_setting(monkeypatch):
    monkeypatch.delenv("FUSEGRAD_CACHE_MAX_MB", raising=False)
    assert eviction.max_bytes() == 512 * 10**6
    monkeypatch.setenv("FUSEGRAD_CACHE_MAX_MB", "0.5")
    assert eviction.max_bytes() == 500_000
    for bad in ("lots", "0", "-3", "inf", "nan"):
        monkeypatch.setenv("FUSEGRAD_CACHE_MAX_MB", bad)
        with pytest.raises(ValueError, match="FUSEGRAD_CACHE_MAX_MB"):
            eviction.max_bytes()


def test_scan_groups_each_entrys_files(builder, leaf, check, private_cache):
    check(_schedules(builder, leaf, 1)[0], runs=1)
    folder = cache.kernel_dir()
    (folder / ".k_x.abc.tmp").write_bytes(b"left by a killed writer")
    (folder / "p_0123.json").write_text("{}")
    entries = eviction.scan(private_cache)
    assert sorted(e.kind for e in entries) == ["kernel", "other", "program"]
    kernel = next(e for e in entries if e.kind == "kernel")
    assert sorted(p.suffix for p in kernel.files) == [".nbc", ".nbi", ".py"]
    assert kernel.size == sum(p.stat().st_size for p in kernel.files)
    assert sum(e.size for e in entries) == sum(p.stat().st_size for p in private_cache.rglob("*")
                                               if p.is_file())


def test_least_recently_used_entries_are_evicted(builder, leaf, check, private_cache,
                                                 monkeypatch):
    schedules = _schedules(builder, leaf, 3)
    for s in schedules:
        check(s, runs=1)
    kernels = _kernels(private_cache)
    assert len(kernels) == 3
    now = time.time()
    for age, entry in zip((300, 200, 100), kernels.values()):  # all written a while ago
        for path in entry.files:
            os.utime(path, (now - age, now - age))
    oldest = min(kernels, key=lambda k: kernels[k].last_used)

    monkeypatch.setattr(cache, "_LOADED", {})   # as in a new process that uses the oldest one
    loaded = STATS.kernels_loaded
    check(next(s for s in schedules if _stem(s) == oldest), runs=1)
    assert STATS.kernels_loaded == loaded + 1
    used = _kernels(private_cache)
    assert used[oldest].last_used >= now - 1   # loading touched it

    one = max(e.size for e in used.values())
    deleted = eviction.evict(private_cache, limit=int(2.2 * one))
    kept = _kernels(private_cache)
    assert oldest in kept and len(kept) == 2 and len(deleted) == 1
    assert sum(e.size for e in eviction.scan(private_cache)) <= eviction.KEEP * 2.2 * one


def test_writing_past_the_cap_evicts(builder, leaf, check, private_cache, monkeypatch):
    schedules = _schedules(builder, leaf, 4)
    check(schedules[0], runs=1)
    one = sum(e.size for e in eviction.scan(private_cache))
    monkeypatch.setenv("FUSEGRAD_CACHE_MAX_MB", str(2.5 * one / 1e6))
    for s in schedules[1:]:
        check(s, runs=2)   # kernels evicted from disk stay loaded in this process
    kept = _kernels(private_cache)
    assert 1 <= len(kept) <= 2
    assert sum(e.size for e in eviction.scan(private_cache)) <= 2.5 * one
    assert set(kept) <= {_stem(s) for s in schedules} and _stem(schedules[-1]) in kept
