"""Deferred gradients: ``backward()`` leaves one ``grad(root, seed, leaf)`` node per leaf, and the
backward graph is built only when a program is compiled for it (``ir.autodiff``).

Every case is run with deferral on and off, and the gradients must be the same (bit for bit: the
expanded graph is the graph an eager ``backward()`` builds).
"""
from __future__ import annotations

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn
from fusegrad.ir import autodiff, ops
from fusegrad.ir.key import structural_key
from fusegrad.tracer import autograd


@pytest.fixture(params=[True, False], ids=["deferred", "eager"])
def defer(request, monkeypatch):
    monkeypatch.setattr(autograd, "DEFER", request.param)
    return request.param


def _model() -> nn.Module:
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _grads(model: nn.Module) -> list[np.ndarray | None]:
    return [None if p.grad is None else p.grad.numpy().copy() for p in model.parameters()]


def _reference(fn) -> list:
    """``fn()``'s result with deferral off."""
    saved = autograd.DEFER
    autograd.DEFER = False
    try:
        return fn()
    finally:
        autograd.DEFER = saved


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


def test_backward_leaves_deferred_nodes_with_the_eager_values(defer):
    x = fg.tensor(np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4))

    def run():
        model = _model()
        model(x).pow(2).sum().backward()
        kinds = {p.grad.node.op for p in model.parameters()}
        return _grads(model), kinds

    grads, kinds = run()
    assert (kinds == {"grad"}) if defer else ("grad" not in kinds)
    _same(grads, _reference(run)[0])


def test_unused_and_blocked_parameters_get_no_gradient(defer):
    x = fg.tensor(np.ones((2, 4), np.float32))

    def run():
        fg.manual_seed(1)
        used, unused, blocked = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
        mask = (blocked(x) > 0).float()  # a comparison carries no gradient
        (used(x) * mask).sum().backward()
        return [p.grad is None for m in (used, unused, blocked) for p in m.parameters()], \
            _grads(used)

    none, grads = run()
    assert none == [False, False, True, True, True, True]
    _same(grads, _reference(run)[1])


def test_accumulation_over_micro_batches_and_a_given_gradient(defer):
    xs = [fg.tensor(np.full((2, 4), v, np.float32)) for v in (0.5, -1.0, 2.0)]

    def run():
        model = _model()
        for k, x in enumerate(xs):
            out = model(x)
            if k == 2:
                out.backward(fg.tensor(np.full(out.shape, 0.25, np.float32)))
            else:
                out.sum().backward()
        return _grads(model)

    _same(run(), _reference(run))


def test_a_repeated_step_builds_no_backward_graph(monkeypatch):
    monkeypatch.setattr(autograd, "DEFER", True)
    model = _model()
    opt = fg.optim.SGD(model.parameters(), lr=0.1)
    x = fg.tensor(np.ones((5, 4), np.float32))
    calls = []
    real = autodiff.backward
    monkeypatch.setattr(autodiff, "backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    losses, built = [], []
    for _ in range(4):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        built.append(len(calls))
    # the first step's program expanded its gradients when it was compiled (not at all when it
    # came from the disk cache); the later steps found it by the forward graph's key
    assert built[0] <= 1 and built[1:] == [built[0]] * 3
    assert losses[-1] < losses[0]


def test_a_value_read_before_backward_differentiates_eagerly(monkeypatch):
    monkeypatch.setattr(autograd, "DEFER", True)
    model = _model()
    loss = model(fg.tensor(np.ones((2, 4), np.float32))).sum()
    loss.item()  # realized: backward reads it back from its buffer
    loss.backward()
    assert all(p.grad.node.op != "grad" for p in model.parameters())


def test_deferred_backward_still_frees_the_graph(defer):
    model = _model()
    loss = model(fg.tensor(np.ones((2, 4), np.float32))).pow(2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_expand_gradients_builds_what_backward_builds():
    w = fg.tensor(np.arange(6, dtype=np.float64).reshape(2, 3), requires_grad=True)
    root = (w * w).sum().node
    seed = ops.const(1.0, root.shape, "float64")
    (expanded,) = autodiff.expand_gradients([ops.grad(root, seed, w.node)])
    want = autodiff.backward(root, seed, [w.node])[w.node]
    assert structural_key([expanded])[0] == structural_key([want])[0]
    assert autodiff.expand_gradients([root]) == [root]
