"""The one-line message of a long compile (stderr, first run only, FUSEGRAD_QUIET=1 silences)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusegrad.backends.numba_cpu.progress import MIN_KERNELS, CompileProgress

STEP = """
import fusegrad as fg
fg.manual_seed(0)
m = fg.nn.Sequential(fg.nn.Linear(4, 8), fg.nn.Tanh(), fg.nn.Linear(8, 2))
opt = fg.optim.Adam(m.parameters())
loss = m(fg.randn(3, 4)).pow(2).mean()
loss.backward()
opt.step()
print(loss.item())
"""


def test_one_line_once_when_kernels_compile(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("FUSEGRAD_QUIET", raising=False)
    progress = CompileProgress(MIN_KERNELS + 2, tmp_path)
    assert progress.prepared(compiled=False) is None  # loaded from disk: nothing to say
    line = progress.prepared(compiled=True)
    assert line == f"fusegrad: compiling up to {MIN_KERNELS + 1} kernels... (first run only; " \
                   f"cached at {tmp_path})"
    assert progress.prepared(compiled=True) is None  # said once
    assert capsys.readouterr().err == line + "\n"


def test_compiling_with_workers_says_how_many_processes_once(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("FUSEGRAD_QUIET", raising=False)
    progress = CompileProgress(30, tmp_path)
    line = progress.starting(23, processes=2)
    assert line == f"fusegrad: compiling 23 kernels in 2 processes... (first run only; " \
                   f"cached at {tmp_path})"
    assert progress.prepared(compiled=True) is None  # said once
    assert CompileProgress(30, None).starting(MIN_KERNELS - 1, 2) is None
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("total", [MIN_KERNELS - 1, 0])
def test_a_short_compile_says_nothing(capsys, monkeypatch, total):
    monkeypatch.delenv("FUSEGRAD_QUIET", raising=False)
    progress = CompileProgress(total, None)
    assert all(progress.prepared(compiled=True) is None for _ in range(total))
    assert capsys.readouterr().err == ""


def test_fusegrad_quiet_silences_it(capsys, monkeypatch):
    monkeypatch.setenv("FUSEGRAD_QUIET", "1")
    assert CompileProgress(50, None).prepared(compiled=True) is None
    assert capsys.readouterr().err == ""


def test_a_first_run_says_it_compiles_and_a_second_loads_quietly(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "FUSEGRAD_QUIET"}
    env["FUSEGRAD_CACHE_DIR"] = str(tmp_path)
    runs = [subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    first = [line for line in runs[0].stderr.splitlines() if line.startswith("fusegrad: compiling")]
    assert len(first) >= 1 and f"(first run only; cached at {tmp_path}" in first[0]
    assert "fusegrad: compiling" not in runs[1].stderr
    assert runs[0].stdout == runs[1].stdout
