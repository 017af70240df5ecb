"""``fusegrad.autograd.grad`` and ``fusegrad.autograd.backward`` against torch.autograd."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fusegrad as fg


def _grads(lib, allow_unused=None):
    x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
    w = lib.tensor([0.5, -1.0, 0.25], dtype=lib.float64, requires_grad=True)
    h = (x * w).tanh()
    y = (h * h).sum()
    gx, gh = lib.autograd.grad(y, [x, h], retain_graph=True)
    (gw,) = lib.autograd.grad([y, h.sum()], [w], retain_graph=True)
    (weighted,) = lib.autograd.grad(h, x, grad_outputs=lib.tensor([1.0, 0.0, 2.0],
                                                                  dtype=lib.float64))
    assert x.grad is None and w.grad is None   # nothing accumulated
    return [t.detach().numpy() for t in (gx, gh, gw, weighted)]


def test_grad_matches_torch():
    for got, want in zip(_grads(fg), _grads(torch)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_grad_of_an_unused_input():
    for lib in (fg, torch):
        x = lib.tensor([1.0], requires_grad=True)
        z = lib.tensor([2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="not have been used in the graph"):
            lib.autograd.grad((x * 2).sum(), [z], retain_graph=True)
        assert lib.autograd.grad((x * 2).sum(), [z], allow_unused=True) == (None,)


def test_grad_frees_the_graph_unless_retained():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    fg.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_grad_create_graph_is_refused():
    x = fg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="create_graph"):
        fg.autograd.grad((x * x).sum(), x, create_graph=True)


def test_autograd_backward_accumulates_like_torch():
    results = []
    for lib in (fg, torch):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        lib.autograd.backward([(x * x).sum(), (x * 3).sum()])
        results.append(x.grad.tolist())
    assert results[0] == results[1]
