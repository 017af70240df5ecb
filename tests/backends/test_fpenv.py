"""Denormals are flushed to zero inside a compiled program's run, and only there."""
from __future__ import annotations

import platform

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.backends.numba_cpu import fpenv

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="MXCSR is x86-64's")

TINY = np.float32(1e-20)  # squared: 1e-40, a float32 denormal


def _square(n: int) -> np.ndarray:
    """A fresh program (its shape is new to this process) squaring ``n`` tiny numbers."""
    x = fg.tensor(np.full(n, TINY, np.float32))
    return (x * x).numpy()


def test_a_program_flushes_denormal_results_and_restores_the_flags(monkeypatch):
    monkeypatch.delenv("FUSEGRAD_FLUSH_DENORMALS", raising=False)
    before = fpenv.read_control_word()
    assert not before & fpenv.FTZ_DAZ
    got = _square(3)
    assert np.array_equal(got, np.zeros(3, np.float32))
    assert fpenv.read_control_word() == before
    assert np.float32(TINY * TINY) > 0  # numpy on this thread keeps gradual underflow


def test_flushing_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("FUSEGRAD_FLUSH_DENORMALS", "0")
    got = _square(5)
    assert np.array_equal(got, np.full(5, TINY * TINY, np.float32)) and got[0] > 0


def test_the_flags_are_restored_when_a_program_raises(monkeypatch):
    monkeypatch.delenv("FUSEGRAD_FLUSH_DENORMALS", raising=False)
    before = fpenv.read_control_word()
    emb = fg.nn.Embedding(4, 2)
    idx = fg.tensor(np.array([1, 7]))
    step = fg.compile(lambda i: emb(i * 1).sum())
    with pytest.raises(IndexError):
        step(idx)
    assert fpenv.read_control_word() == before
    assert np.float32(TINY * TINY) > 0
