"""Outside ``fusegrad.compile``, a built-in optimizer traces its update once and replays it.

The replay is ``fusegrad.compile``'s, on a function the library compiled itself: it must give
torch's trajectory, follow what changes between steps (learning rates, which parameters have a
gradient, frozen parameters), warn of nothing, and fall back to the eager update when the update
keeps changing.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

import fusegrad as fg
import fusegrad.optimlib as optim
from fusegrad.optimlib import optimizer as optimizer_module
from fusegrad.optimlib.optimizer import eager_updates
from fusegrad.tracer.realize import STATS

RTOL, ATOL = 1e-5, 1e-6


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal(6).astype(
        np.float32)
    w2, b2 = rng.standard_normal((3, 6)).astype(np.float32), rng.standard_normal(3).astype(
        np.float32)
    models = []
    for lib in (torch, fg):
        m = lib.nn.Sequential(lib.nn.Linear(4, 6), lib.nn.Tanh(), lib.nn.Linear(6, 3))
        with lib.no_grad():
            for p, a in zip(m.parameters(), (w1, b1, w2, b2)):
                p.copy_(lib.tensor(a))
        models.append(m)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.standard_normal((5, 3)).astype(np.float32)
    return models, x, y


def _step(lib, model, opt, x, y, use=None):
    opt.zero_grad()
    out = model(lib.tensor(x))
    loss = ((out - lib.tensor(y)) ** 2).mean()
    if use == "first":  # the second layer gets no gradient this step
        loss = (model[0](lib.tensor(x)) ** 2).mean()
    loss.backward()
    opt.step()
    return float(loss.item())


def _params_close(tm, fm):
    for tp, fp in zip(tm.parameters(), fm.parameters()):
        np.testing.assert_allclose(fp.detach().numpy(), tp.detach().numpy(), rtol=RTOL, atol=ATOL)


def test_adam_update_is_traced_once_and_replayed_with_torchs_trajectory():
    (tm, fm), x, y = _pair()
    topt = torch.optim.Adam(tm.parameters(), lr=1e-2, weight_decay=1e-3)
    fopt = optim.Adam(fm.parameters(), lr=1e-2, weight_decay=1e-3)
    for i in range(12):
        np.testing.assert_allclose(_step(fg, fm, fopt, x, y), _step(torch, tm, topt, x, y),
                                   rtol=RTOL, atol=ATOL)
        if i == 1:
            compiled = STATS.programs_compiled
    _params_close(tm, fm)
    assert fopt._replay.misses == 1 and fopt._replay.hits == 11
    assert STATS.programs_compiled == compiled  # steps 3..12 compiled nothing


def test_a_scheduler_and_a_hand_set_lr_reach_the_replayed_update():
    (tm, fm), x, y = _pair(1)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    fopt = optim.SGD(fm.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.5)
    fsched = optim.lr_scheduler.StepLR(fopt, step_size=2, gamma=0.5)
    for i in range(8):
        if i == 5:
            for g in (*topt.param_groups, *fopt.param_groups):
                g["lr"] = 0.3
        np.testing.assert_allclose(_step(fg, fm, fopt, x, y), _step(torch, tm, topt, x, y),
                                   rtol=RTOL, atol=ATOL)
        tsched.step()
        fsched.step()
    _params_close(tm, fm)
    assert fopt._replay.misses == 1


def test_parameters_without_a_gradient_or_frozen_are_followed():
    (tm, fm), x, y = _pair(2)
    topt = torch.optim.Adam(tm.parameters(), lr=1e-2)
    fopt = optim.Adam(fm.parameters(), lr=1e-2)
    plan = [None, None, "first", None, "first", None]
    for use in plan:
        np.testing.assert_allclose(_step(fg, fm, fopt, x, y, use),
                                   _step(torch, tm, topt, x, y, use), rtol=RTOL, atol=ATOL)
    _params_close(tm, fm)
    # both grad patterns are traced once each, then replayed
    assert fopt._replay.misses == 2 and fopt._replay.hits == 4
    for m in (tm, fm):
        m[0].weight.requires_grad_(False)
    for _ in range(2):
        np.testing.assert_allclose(_step(fg, fm, fopt, x, y), _step(torch, tm, topt, x, y),
                                   rtol=RTOL, atol=ATOL)
    _params_close(tm, fm)


def test_an_update_that_keeps_changing_falls_back_to_eager_without_warnings(monkeypatch):
    monkeypatch.setattr(optimizer_module, "_REPLAY_MISSES", 2)
    (tm, fm), x, y = _pair(3)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.5)
    fopt = optim.SGD(fm.parameters(), lr=0.05, momentum=0.5)
    params = [list(m.parameters()) for m in (tm, fm)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(6):
            for m in (0, 1):  # another parameter is frozen at every step: a new update each time
                for j, p in enumerate(params[m]):
                    p.requires_grad_(j != i % 4)
            np.testing.assert_allclose(_step(fg, fm, fopt, x, y), _step(torch, tm, topt, x, y),
                                       rtol=RTOL, atol=ATOL)
    _params_close(tm, fm)
    assert fopt._replay is None  # three traces: replaying stopped, the update runs eagerly


def test_eager_updates_traces_the_step_as_one_program():
    (_, fm), x, y = _pair(4)
    fopt = optim.Adam(fm.parameters(), lr=1e-2)
    for _ in range(2):
        _step(fg, fm, fopt, x, y)
    before = STATS.runs
    _step(fg, fm, fopt, x, y)
    assert STATS.runs - before == 2  # forward and backward, then the replayed update
    with eager_updates():
        before = STATS.runs
        _step(fg, fm, fopt, x, y)
        assert STATS.runs - before == 1


def test_an_optimizer_with_its_replay_deep_copies_without_it():
    import copy
    (_, fm), x, y = _pair(5)
    fopt = optim.SGD(fm.parameters(), lr=0.1)
    _step(fg, fm, fopt, x, y)
    _step(fg, fm, fopt, x, y)
    twin = copy.deepcopy(fopt)
    assert "_replay" not in twin.__dict__ and "_replay" in fopt.__dict__
    assert twin.param_groups[0]["params"][0] is not fopt.param_groups[0]["params"][0]
