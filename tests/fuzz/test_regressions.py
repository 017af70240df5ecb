"""Minimal reproductions of what the differential fuzzer (tests/fuzz) found."""
from __future__ import annotations

import pytest

import fusegrad


@pytest.mark.xfail(strict=True, reason="fusegrad.compile: a replay of a body that runs backward "
                   "returns its outputs without requires_grad (the traced call keeps it)")
def test_replayed_output_keeps_requires_grad() -> None:
    def step(x):
        y = -x
        y.sum().backward()
        return y

    compiled = fusegrad.compile(step)
    first = compiled(fusegrad.ones(2, requires_grad=True))
    second = compiled(fusegrad.ones(2, requires_grad=True))
    assert compiled.hits == 1
    assert first.requires_grad
    assert second.requires_grad  # torch: -x requires grad

