"""The command line: train, dump, cache."""
import os
import re
import subprocess
import sys
from pathlib import Path


def _cli(*args, cache=None, **extra_env):
    env = dict(os.environ, **extra_env)
    if cache is not None:
        env["FUSEGRAD_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, "-m", "fusegrad", *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_train_prints_loss_time_and_kernels():
    out = _cli("train", "--steps", "3", "--batch", "8")
    assert out.count("loss") >= 3 and "kernels" in out and " ms" in out


def test_train_compiled_gives_the_same_losses():
    def losses(out):
        return re.findall(r"loss (\d+\.\d+)", out)
    eager = losses(_cli("train", "--steps", "4", "--batch", "8"))
    compiled = losses(_cli("train", "--steps", "4", "--batch", "8", "--compile"))
    assert len(eager) == 4 and compiled == eager


def test_dump_shows_every_stage():
    out = _cli("dump", "--batch", "8")
    for marker in ("# summary", "# traced", "after cse", "after dce", "# schedule",
                   "# generated source", "@njit"):
        assert marker in out, marker


def test_cache_info_and_clear(tmp_path):
    _cli("train", "--steps", "1", "--batch", "4", cache=tmp_path)
    info = _cli("cache", "info", cache=tmp_path)
    assert str(tmp_path) in info and "kernels" in info
    assert re.search(r"entries: [1-9]\d* kernels, [1-9]\d* programs", info), info
    _cli("cache", "clear", cache=tmp_path)
    assert "entries: 0 kernels, 0 programs" in _cli("cache", "info", cache=tmp_path)


def test_cache_info_shows_use_against_the_cap_and_the_test_suites_cache(tmp_path):
    suite_cache = Path(__file__).resolve().parents[1] / ".fusegrad-cache"  # tests/conftest.py's
    suite_cache.mkdir(exist_ok=True)
    info = _cli("cache", "info", cache=tmp_path, FUSEGRAD_CACHE_MAX_MB="64")
    assert re.search(r"size: 0\.00 MB of 64 MB \(0%; FUSEGRAD_CACHE_MAX_MB", info), info
    assert re.search(rf"test suite's cache: {re.escape(str(suite_cache))} \(\d+\.\d\d MB\)", info)
    info = _cli("cache", "info", cache=suite_cache)
    assert re.search(r"test suite's cache: .* MB, this one\)", info), info


def test_dump_json_and_dot():
    import json
    graph = json.loads(_cli("dump", "--batch", "4", "--format", "json"))
    ops = {n["op"] for n in graph["nodes"]}
    assert {"buffer", "matmul", "sum"} <= ops and graph["edges"]
    dot = _cli("dump", "--batch", "4", "--format", "dot")
    assert dot.startswith("digraph fusegrad {") and "->" in dot
