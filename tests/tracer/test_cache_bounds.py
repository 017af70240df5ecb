"""In-memory caches are bounded: programs, kernels and arange buffers are dropped least recently
used first, and a long run over ever new shapes keeps them within their sizes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from parity import using_backend

import fusegrad as fg
from fusegrad.lru import LRUCache, size_from_env, switch_from_env
from fusegrad.tracer import functions, realize


def test_lru_drops_the_least_recently_used():
    cache: LRUCache[str, int] = LRUCache(2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1            # "a" is now the most recently used
    cache["c"] = 3
    assert "b" not in cache and cache.get("a") == 1 and cache["c"] == 3
    assert len(cache) == 2 and cache.evictions == 1
    cache.resize(1)
    assert list(cache) == ["c"] and cache.evictions == 2
    with pytest.raises(ValueError, match="at least one entry"):
        cache.resize(0)


def test_sizes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FUSEGRAD_TEST_CACHE_SIZE", raising=False)
    assert size_from_env("FUSEGRAD_TEST_CACHE_SIZE", 7) == 7
    monkeypatch.setenv("FUSEGRAD_TEST_CACHE_SIZE", "3")
    assert size_from_env("FUSEGRAD_TEST_CACHE_SIZE", 7) == 3
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("FUSEGRAD_TEST_CACHE_SIZE", bad)
        with pytest.raises(ValueError, match="FUSEGRAD_TEST_CACHE_SIZE"):
            size_from_env("FUSEGRAD_TEST_CACHE_SIZE", 7)


def test_switches_from_the_environment(monkeypatch):
    monkeypatch.delenv("FUSEGRAD_TEST_SWITCH", raising=False)
    assert switch_from_env("FUSEGRAD_TEST_SWITCH")
    for off in ("0", "false", " No ", "OFF"):
        monkeypatch.setenv("FUSEGRAD_TEST_SWITCH", off)
        assert not switch_from_env("FUSEGRAD_TEST_SWITCH")
    for on in ("1", "yes", ""):
        monkeypatch.setenv("FUSEGRAD_TEST_SWITCH", on)
        assert switch_from_env("FUSEGRAD_TEST_SWITCH")


def test_program_and_kernel_cache_sizes_are_read_at_import():
    env = dict(os.environ, FUSEGRAD_PROGRAM_CACHE_SIZE="5", FUSEGRAD_KERNEL_CACHE_SIZE="9")
    code = ("from fusegrad.tracer import realize; from fusegrad.backends.numba_cpu import cache; "
            "print(realize._PROGRAMS.capacity, cache._LOADED.capacity)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(fg.__file__)))
    assert out.stdout.split() == ["5", "9"]


@pytest.fixture
def small_program_cache():
    realize.set_program_cache_size(4)
    try:
        yield realize._PROGRAMS
    finally:
        realize.set_program_cache_size(realize.PROGRAM_CACHE_SIZE)


def test_a_long_loop_of_new_shapes_keeps_the_program_cache_bounded(small_program_cache):
    evicted = small_program_cache.evictions
    with using_backend("interpreter"):
        for n in range(1, 25):
            x = fg.arange(n).float()
            np.testing.assert_array_equal((x * 2 + 1).numpy(), np.arange(n) * 2 + 1)
            assert len(small_program_cache) <= 4
        assert small_program_cache.evictions - evicted >= 20
        # a program dropped from memory is made again when it is needed again
        np.testing.assert_array_equal((fg.arange(1).float() * 2 + 1).numpy(), [1.0])


def test_arange_buffers_are_bounded():
    for n in range(1, 200):
        fg.one_hot(fg.tensor([0]), n)
    assert len(functions._arange_cache) <= functions._arange_cache.capacity == 64


@pytest.mark.numba
def test_loaded_kernels_are_bounded():
    from fusegrad.backends.numba_cpu import cache
    from fusegrad.backends.numba_cpu.checks import in_range_kernel
    capacity = cache._LOADED.capacity
    cache._LOADED.resize(1)
    try:
        check32 = in_range_kernel("int32")
        in_range_kernel("int64")
        assert len(cache._LOADED) == 1
        bounds = np.array([0, 3], np.int64)
        assert in_range_kernel("int32")(np.array([0, 2], np.int32), bounds)  # loaded again
        assert check32(np.array([0, 2], np.int32), bounds)  # a dropped kernel still runs
    finally:
        cache._LOADED.resize(capacity)
