"""Minimal reproductions of what the differential fuzzer (tests/fuzz) found."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import using_backend

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


@pytest.mark.parametrize("backend", ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)])
def test_std_of_a_constant_slice_has_zero_gradient(backend: str) -> None:
    """torch defines the gradient of std as 0 where the std is 0; sqrt's own gave nan."""
    x = np.array([[1.0, 1.0], [1.0, 3.0]])
    want = torch.tensor(x, requires_grad=True)
    want.std(dim=1, correction=0).sum().backward()
    with using_backend(backend):
        got = fusegrad.tensor(x, requires_grad=True)
        out = got.std(dim=1, correction=0)
        out.sum().backward()
        np.testing.assert_allclose(out.detach().numpy(), [0.0, 1.0])
        np.testing.assert_allclose(got.grad.numpy(), want.grad.numpy())


@pytest.mark.parametrize("shape,chunks,dim", [((0,), 2, 0), ((0, 3), 3, 0), ((2, 0), 2, 1)])
def test_chunk_of_an_empty_dim_gives_chunks_empty_pieces(shape, chunks, dim) -> None:
    """Found as ``x1.chunk(2, 0)[1]`` on an empty x1: torch gives ``chunks`` empty pieces."""
    got = fusegrad.zeros(*shape).chunk(chunks, dim)
    want = torch.zeros(*shape).chunk(chunks, dim)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]


def test_chunk_count_must_be_positive() -> None:
    with pytest.raises(RuntimeError, match="greater than 0"):
        fusegrad.ones(3).chunk(0)
