"""The disk program cache: a second process replaying a training step loads its programs.

Fresh processes over a cache folder of their own (``FUSEGRAD_CACHE_DIR``) check that a second
process loads instead of compiling; damaged entries are checked in this process, over a
temporary folder, after forgetting the in-memory programs.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from parity import using_backend

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.backends.numba_cpu import STATS as KSTATS
from fusegrad.backends.numba_cpu import program_cache
from fusegrad.tracer.realize import STATS, clear_program_cache, realize
from fusegrad.tracer.tensor import PENDING

SCRIPT = r"""
import contextlib, json, sys
import fusegrad as fg, fusegrad.nnlib as nn, fusegrad.optimlib as optim
from fusegrad.backends.numba_cpu import STATS as KSTATS
from fusegrad.tracer.realize import STATS
fg.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = fg.randn(4, 6), fg.randint(0, 3, (4,))

def step(x, y):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss

# "eager": the optimizer's update traced with the rest, one program, as fg.compile runs it;
# "replayed": the default uncompiled step, whose update is replayed as a second program
fn = fg.compile(step) if sys.argv[1] == "compiled" else step
with optim.optimizer.eager_updates() if sys.argv[1] == "eager" else contextlib.nullcontext():
    losses = [fn(x, y).item() for _ in range(3)]
report = STATS.last_entry.compiled.report
print(json.dumps({"loaded": STATS.programs_loaded, "built": STATS.programs_built,
                  "programs": STATS.programs_compiled, "kernels_compiled": KSTATS.kernels_compiled,
                  "damaged": KSTATS.damaged_entries, "losses": losses,
                  "from_disk": report.from_disk, "passes": len(report.passes),
                  "schedule": report.schedule is not None,
                  "counts": [report.kernel_count, report.extern_count],
                  "params": [p.detach().numpy().tolist() for p in model.parameters()]}))
"""

MODES = ["eager", "compiled"]


def _env(cache: pathlib.Path, **extra) -> dict:
    return dict(os.environ, FUSEGRAD_CACHE_DIR=str(cache), FUSEGRAD_BACKEND="numba_cpu", **extra)


def _run(cache: pathlib.Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=_env(cache), check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _programs(cache: pathlib.Path) -> list[pathlib.Path]:
    return sorted(cache.rglob("p_*.json"))


def _same_results(a: dict, b: dict) -> None:
    assert a["losses"] == b["losses"]
    assert a["params"] == b["params"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """A cache folder filled by two processes running the eager step at the same time (both
    compile and write the same entries), and what the first printed."""
    cache = tmp_path_factory.mktemp("warm")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, "eager"], env=_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    _same_results(*results)
    return cache, results[0]


def test_concurrent_writers_leave_good_entries(warm):
    cache, first = warm
    assert first["loaded"] == 0 and first["built"] > 0 and not first["from_disk"]
    assert first["passes"] > 0 and first["schedule"]
    assert len(_programs(cache)) == first["built"] and not list(cache.rglob("*.tmp"))
    for path in _programs(cache):
        program_cache.decode(path.read_text())  # whole, checksum good, this compiler's


@pytest.mark.parametrize("mode", MODES)
def test_second_process_loads_its_programs(warm, mode):
    # the eager step and the same step under fusegrad.compile realize the same program
    cache, first = warm
    second = _run(cache, mode)
    assert second["loaded"] == first["programs"] and second["built"] == 0
    assert second["kernels_compiled"] == 0 and second["damaged"] == 0
    assert second["from_disk"] and second["passes"] == 0 and not second["schedule"]
    assert second["counts"] == first["counts"] and second["counts"][0] > 0
    _same_results(first, second)


def test_an_uncompiled_step_with_its_replayed_update_loads_both_programs(tmp_path):
    cache = tmp_path / "cache"
    first = _run(cache, "replayed")
    assert first["built"] == first["programs"] >= 2  # forward and backward, then the update
    second = _run(cache, "replayed")
    assert second["loaded"] == first["programs"] and second["built"] == 0
    assert second["kernels_compiled"] == 0 and second["damaged"] == 0
    _same_results(first, second)
    _same_results(first, _run(cache, "eager"))


def test_program_whose_kernel_files_were_deleted_still_runs(warm, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(warm[0], cache)
    deleted = [f for f in cache.rglob("*") if f.is_file() and not f.name.startswith("p_")]
    assert any(f.name.startswith("k_") for f in deleted)
    for f in deleted:
        f.unlink()
    again = _run(cache, "compiled")
    assert again["loaded"] == warm[1]["programs"] and again["built"] == 0
    assert again["kernels_compiled"] > 0  # rebuilt from the sources kept in the program entry
    _same_results(warm[1], again)


def test_dump_compiles_every_stage_despite_the_program_cache():
    shared = pathlib.Path(os.environ["FUSEGRAD_CACHE_DIR"])  # the suite's: its kernels are warm
    cli = [sys.executable, "-m", "fusegrad"]
    for _ in range(2):  # the first dump writes the demo's programs, the second could load them
        out = subprocess.run([*cli, "dump", "--batch", "4"], env=_env(shared), check=False,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        for marker in ("after cse", "# schedule", "# generated source", "@njit"):
            assert marker in out.stdout, marker
        assert "loaded from the disk program cache" not in out.stdout
    info = subprocess.run([*cli, "cache", "info"], env=_env(shared), check=True,
                          capture_output=True, text=True, timeout=300).stdout
    assert re.search(r"entries: \d+ kernels, [1-9]\d* programs", info), info


# ---------------------------------------------------------------------------- this process
def _train() -> tuple[list[float], list[np.ndarray]]:
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = fg.randn(4, 6), fg.randint(0, 3, (4,))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().numpy().copy() for p in model.parameters()]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A program cache of this test's own; the in-memory programs forgotten before and after.

    The step's kernels are first loaded from the suite's cache (they stay loaded in this
    process), so the tests' own folders hold programs and kernel files but compile nothing.
    """
    monkeypatch.delenv("FUSEGRAD_CACHE", raising=False)
    with using_backend("numba_cpu"):
        if PENDING:
            realize(*PENDING.values())
        clear_program_cache()
        _train()
        monkeypatch.setenv("FUSEGRAD_CACHE_DIR", str(tmp_path))
        clear_program_cache()
        yield tmp_path
        clear_program_cache()


def _fresh_train() -> tuple[tuple, int, int, int]:
    """Train after forgetting the in-memory programs: (results, built, loaded, damaged)."""
    clear_program_cache()
    built, loaded, damaged = STATS.programs_built, STATS.programs_loaded, KSTATS.damaged_entries
    result = _train()
    return (result, STATS.programs_built - built, STATS.programs_loaded - loaded,
            KSTATS.damaged_entries - damaged)


def _assert_same(a, b) -> None:
    assert a[0] == b[0]
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)


def _resigned(text: str, change) -> str:
    """The entry with ``change`` applied to its program and a matching checksum."""
    body = json.loads(text)["program"]
    change(body)
    body = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return '{"checksum":"' + hashlib.sha256(body.encode()).hexdigest() + '","program":' + body + "}"


DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "garbage": lambda text: "\x00garbage" * 100,
    "empty": lambda text: "",
    # valid JSON with one number changed: the checksum no longer matches
    "edited": lambda text: re.sub(r'"total_bytes":(\d+)', lambda m: f'"total_bytes":{int(m[1]) + 8}',
                                  text),
    # checksums that match what was written by mistake
    "missing key": lambda text: _resigned(text, lambda b: b.pop("run_source")),
    "bad slot": lambda text: _resigned(text, lambda b: b["slots"].__setitem__(0, 10 ** 6)),
    "bad kernel": lambda text: _resigned(
        text, lambda b: b["kernels"][0].__setitem__("source", b["kernels"][0]["source"] + "x = (")),
    "another key": lambda text: _resigned(text, lambda b: b.__setitem__("key", "0" * 64)),
    # well formed, written by another compiler: replaced without a warning
    "stale": lambda text: _resigned(text, lambda b: b.__setitem__("compiler", "0" * 64)),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_or_stale_entry_is_rebuilt(own_cache, damage):
    first, built, loaded, _ = _fresh_train()
    assert built > 0 and loaded == 0
    entries = _programs(own_cache)
    assert len(entries) == built
    for path in entries:
        text = path.read_text()
        changed = DAMAGE[damage](text)
        assert changed != text
        path.write_text(changed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, built_again, loaded_again, damaged = _fresh_train()
    _assert_same(first, again)
    assert built_again == built and loaded_again == 0
    assert damaged == (0 if damage == "stale" else built)
    assert any("program cache entry" in str(w.message) for w in caught) == (damage != "stale")
    third, built_third, loaded_third, damaged = _fresh_train()  # the rebuilt entries are good
    _assert_same(first, third)
    assert (built_third, loaded_third, damaged) == (0, built, 0)


def test_program_entry_copied_over_another_is_not_loaded(own_cache):
    # valid JSON, a good checksum, this compiler's: but the program of another graph, which
    # failed every run ("cannot reshape array of size 4 into shape (2,20)")
    first, built, _, _ = _fresh_train()
    trained = _programs(own_cache)
    fg.randn(3, 7).exp().sum().item()
    other = next(p for p in _programs(own_cache) if p not in trained)
    for path in trained:
        shutil.copyfile(other, path)
    with pytest.warns(RuntimeWarning, match="the entry of another program"):
        again, built_again, loaded, damaged = _fresh_train()
    _assert_same(first, again)
    assert (built_again, loaded, damaged) == (built, 0, built)
    assert _fresh_train()[1:] == (0, built, 0)


FIRST_RUN = {
    "raises": lambda src: src.replace("def run(inputs):\n", "def run(inputs):\n    inputs = []\n", 1),
    "returns other outputs": lambda src: src.replace("    return [", "    return [] and [", 1),
}


@pytest.mark.parametrize("fault", list(FIRST_RUN))
def test_loaded_program_failing_its_first_run_is_compiled_again(own_cache, fault):
    first, built, _, _ = _fresh_train()
    entries = _programs(own_cache)
    sources = {path: program_cache.decode(path.read_text())["run_source"] for path in entries}
    for path in entries:
        path.write_text(_resigned(path.read_text(), lambda b: b.__setitem__(
            "run_source", FIRST_RUN[fault](b["run_source"]))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, _, loaded, _ = _fresh_train()
    _assert_same(first, again)
    assert loaded == built
    assert sum("failed its first run" in str(w.message) for w in caught) == built
    for path in entries:   # rewritten by the recompilation
        assert program_cache.decode(path.read_text())["run_source"] == sources[path]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = _fresh_train()
    _assert_same(first, third[0])
    assert third[1:] == (0, built, 0)


def test_loaded_program_reports_stored_facts(own_cache):
    _fresh_train()
    compiled = STATS.last_entry.compiled
    report, program = compiled.report, compiled.program
    _fresh_train()
    loaded = STATS.last_entry.compiled
    assert loaded.report.from_disk and loaded.report.schedule is None and loaded.report.passes == []
    assert (loaded.report.kernel_count, loaded.report.extern_count) == \
        (report.kernel_count, report.extern_count)
    assert loaded.report.original_seconds == pytest.approx(report.seconds)
    assert [s.hash for s in loaded.program.sources] == [s.hash for s in program.sources]
    assert loaded.program.plan.total_bytes == program.plan.total_bytes
    assert loaded.program.run_source == program.run_source
    assert all(n.attrs[0].data is None for n in loaded.inputs)  # data-less stand-ins
    assert "loaded from the disk cache" in loaded.program.describe()


def test_disabled_cache_neither_writes_nor_reads_programs(own_cache, monkeypatch):
    _fresh_train()
    assert _programs(own_cache)
    monkeypatch.setenv("FUSEGRAD_CACHE", "0")
    _, built, loaded, _ = _fresh_train()
    assert built > 0 and loaded == 0
    shutil.rmtree(own_cache)
    _fresh_train()
    assert not own_cache.exists() or not _programs(own_cache)
