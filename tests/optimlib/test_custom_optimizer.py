"""A custom optimizer written as in torch (the guide's section 6.1) compiles like the built-ins.

``group['lr']`` reads as a RuntimeFloat: a float in every Python sense that the tracer takes as
a runtime input, so ``p.add_(d_p, alpha=-group['lr'])`` builds one program whatever the lr —
changed by hand, by a scheduler, eagerly or under ``fusegrad.compile`` — and the trajectory
stays torch's.
"""
from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
import fusegrad.optimlib as optim
from fusegrad.optimlib.runtime import RuntimeFloat, RuntimeInt
from fusegrad.tracer.realize import STATS, clear_program_cache, realize
from fusegrad.tracer.tensor import PENDING

STEPS = 20
RTOL, ATOL = 1e-5, 1e-6


def custom_optimizer(lib, lib_optim):
    """The guide's CustomOptimizer (section 6.1) for ``lib`` (torch or fusegrad)."""

    class CustomOptimizer(lib_optim.Optimizer):
        def __init__(self, params, lr=1e-3, momentum=0.9):
            defaults = dict(lr=lr, momentum=momentum)  # noqa: C408 (the guide's code)
            super(CustomOptimizer, self).__init__(params, defaults)  # noqa: UP008

        @lib.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue

                    # Custom update rule
                    d_p = p.grad
                    p.add_(d_p, alpha=-group['lr'])

    return CustomOptimizer


def data_minus_optimizer(lib, lib_optim):
    """The other common way: ``p.data -= lr * grad`` with arithmetic on the lr first."""

    class DataSGD(lib_optim.Optimizer):
        def __init__(self, params, lr=1e-3):
            super().__init__(params, {'lr': lr})

        @lib.no_grad()
        def step(self):
            for group in self.param_groups:
                half = group['lr'] * 0.5
                for p in group['params']:
                    p.data -= half * p.grad
                    p.data -= p.grad * (1 - (1 - half))

    return DataSGD


class Problem:
    """``mean((tanh(x @ w + b) - y) ** 2)`` with fixed data, written once for both libraries."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w0 = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
        self.b0 = rng.uniform(-0.5, 0.5, (3,)).astype(np.float32)
        self.x = rng.uniform(-1, 1, (8, 4)).astype(np.float32)
        self.y = rng.uniform(-0.8, 0.8, (8, 3)).astype(np.float32)

    def params(self, lib):
        return [lib.tensor(self.w0.copy(), requires_grad=True),
                lib.tensor(self.b0.copy(), requires_grad=True)]

    def loss(self, lib, params, x=None):
        w, b = params
        x = lib.tensor(self.x) if x is None else x
        return ((lib.tanh(x @ w + b) - lib.tensor(self.y)) ** 2).mean()


def _numpy(t) -> np.ndarray:
    return t.detach().numpy()


def _fresh_programs() -> int:
    """Forget compiled programs and realize tensors earlier tests left pending (a realization
    computes every live pending tensor, which would change the first step's program); returns
    the programs compiled so far."""
    if PENDING:
        realize(*PENDING.values())
    clear_program_cache()
    return STATS.programs_compiled


def _by_hand(opt, sched, i):
    for g in opt.param_groups:
        g['lr'] = 0.3 * 0.9 ** i + 0.01 * (i % 3)


def _step_lr(lib_optim):
    return lambda opt: lib_optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.85)


def _lambda_lr(lib_optim):
    return lambda opt: lib_optim.lr_scheduler.LambdaLR(opt, lambda e: 1 / (1 + 0.3 * e))


SCHEDULES = {"by-hand": None, "StepLR": _step_lr, "LambdaLR": _lambda_lr}


def _train(lib, lib_optim, make_opt, schedule, problem, steps=STEPS, lr=0.3, groups=False):
    """Parameters after each step, and the programs compiled so far after each step."""
    params = problem.params(lib)
    spec = ([{"params": [params[0]]}, {"params": [params[1]], "lr": lr / 3}] if groups
            else params)
    opt = make_opt(lib, lib_optim)(spec, lr=lr)
    sched = SCHEDULES[schedule](lib_optim)(opt) if SCHEDULES[schedule] else None
    history, compiled = [], []
    start = _fresh_programs()  # count every program this run needs, whatever ran before
    for i in range(steps):
        if sched is None:
            _by_hand(opt, sched, i)
        opt.zero_grad()
        problem.loss(lib, params).backward()
        opt.step()
        if sched is not None:
            sched.step()
        history.append([_numpy(p).copy() for p in params])  # realizes the step
        compiled.append(STATS.programs_compiled - start)
    return history, compiled, opt


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("make_opt", [custom_optimizer, data_minus_optimizer],
                         ids=["guide-CustomOptimizer", "data-minus"])
def test_custom_optimizer_follows_torch_and_compiles_once_while_lr_changes(make_opt, schedule,
                                                                           backend):
    problem = Problem(3)
    with using_backend(backend):
        got, compiled, opt = _train(fg, optim, make_opt, schedule, problem)
    want, _, ref = _train(torch, torch.optim, make_opt, schedule, problem)
    for step, (gs, ws) in enumerate(zip(got, want)):
        for i, (g, w) in enumerate(zip(gs, ws)):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL,
                                       err_msg=f"parameter {i} after step {step + 1}")
    assert compiled[0] > 0 and compiled[1:] == [compiled[0]] * (STEPS - 1)  # none after step 1
    assert [g['lr'] for g in opt.param_groups] == [g['lr'] for g in ref.param_groups]
    assert len({g['lr'] for g in opt.param_groups}) == 1 and opt.param_groups[0]['lr'] != 0.3


def test_parameter_groups_with_their_own_lr_follow_torch():
    problem = Problem(4)
    got, compiled, _ = _train(fg, optim, custom_optimizer, "StepLR", problem, groups=True)
    want, _, _ = _train(torch, torch.optim, custom_optimizer, "StepLR", problem, groups=True)
    for gs, ws in zip(got, want):
        for g, w in zip(gs, ws):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    assert compiled[1:] == [compiled[0]] * (STEPS - 1)


def test_an_update_pending_when_lr_changes_keeps_the_lr_it_was_built_with():
    problem = Problem(5)
    params = problem.params(fg)
    opt = custom_optimizer(fg, optim)(params, lr=0.2)
    problem.loss(fg, params).backward()
    expected = [_numpy(p) - np.float32(0.2) * _numpy(p.grad) for p in params]
    opt.step()                         # lazy: nothing realized yet
    opt.param_groups[0]['lr'] = 50.0   # as a scheduler does right after the step
    assert opt.param_groups[0]['lr'] == 50.0
    for p, e in zip(params, expected):
        np.testing.assert_allclose(_numpy(p), e, rtol=1e-6)


@pytest.mark.parametrize("make_opt", [custom_optimizer, data_minus_optimizer],
                         ids=["guide-CustomOptimizer", "data-minus"])
def test_compiled_custom_step_is_traced_once_and_equals_eager(make_opt):
    def run(compiled):
        problem = Problem(6)
        params = problem.params(fg)
        opt = make_opt(fg, optim)(params, lr=0.3)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.85)
        calls = {"n": 0}

        def step(x):
            calls["n"] += 1
            opt.zero_grad()
            loss = problem.loss(fg, params, x)
            loss.backward()
            opt.step()
            return loss

        fn = fg.compile(step) if compiled else step
        losses, counts = [], []
        _fresh_programs()
        for i in range(12):
            if i % 3 == 2:
                opt.param_groups[0]['lr'] = 0.05 * i  # by hand, between scheduler steps
            losses.append(_numpy(fn(fg.tensor(problem.x))).item())
            sched.step()
            counts.append(STATS.programs_compiled)
        return [_numpy(p) for p in params], losses, calls["n"], counts

    eager, compiled = run(False), run(True)
    assert compiled[2] == 1  # the body ran once; every later call replayed its program
    assert compiled[3][1:] == [compiled[3][0]] * 11
    assert eager[3][1:] == [eager[3][0]] * 11
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-6)
    for got, want in zip(compiled[0], eager[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    # and the compiled run is torch's trajectory
    problem = Problem(6)
    tparams = problem.params(torch)
    ref = make_opt(torch, torch.optim)(tparams, lr=0.3)
    sched = torch.optim.lr_scheduler.StepLR(ref, step_size=1, gamma=0.85)
    for i in range(12):
        if i % 3 == 2:
            ref.param_groups[0]['lr'] = 0.05 * i
        ref.zero_grad()
        problem.loss(torch, tparams).backward()
        ref.step()
        sched.step()
    for got, tp in zip(compiled[0], tparams):
        np.testing.assert_allclose(got, tp.detach().numpy(), rtol=RTOL, atol=ATOL)


def test_runtime_float_behaves_as_a_float():
    x = RuntimeFloat(0.1)
    assert isinstance(x, float) and x == 0.1 and hash(x) == hash(0.1)
    assert str(x) == repr(x) == "0.1" and f"{x:.3f}" == "0.100" and f"{x}" == "0.1"
    assert json.dumps({"lr": x}) == '{"lr": 0.1}' and json.loads(json.dumps([x])) == [0.1]
    assert x < 1 and x > 0.05 and max(x, 0.05) == 0.1 and round(x, 2) == 0.1
    assert math.log(x) == math.log(0.1) and math.isclose(x, 0.1)
    assert np.float32(x) == np.float32(0.1) and np.array([x]).dtype == np.float64
    assert np.asarray(x) == 0.1 and np.array([1.0, 2.0]) * x == pytest.approx([0.1, 0.2])
    for v in (copy.copy(x), copy.deepcopy(x), pickle.loads(pickle.dumps(x)), float(x)):
        assert type(v) is float and v == 0.1
    cases = [(-x, -0.1), (x * 3, 0.1 * 3), (3 * x, 3 * 0.1), (x / 7, 0.1 / 7), (7 / x, 7 / 0.1),
             (x + 2, 0.1 + 2), (2 + x, 2 + 0.1), (1 - x, 1 - 0.1), (x - 1, 0.1 - 1),
             (x ** 2, 0.1 ** 2), (abs(-x), 0.1), (+x, 0.1), (x * x, 0.1 * 0.1)]
    for got, want in cases:
        assert type(got) is RuntimeFloat and got == want and repr(got) == repr(want)
    assert type(x * np.float32(2)) is np.float64  # as for a plain float
    with pytest.raises(ZeroDivisionError):
        x / 0
    n = RuntimeInt(3)
    assert isinstance(n, int) and repr(n) == "3" and json.dumps(n) == "3"
    assert type(-n) is RuntimeInt and type(n / 2) is RuntimeFloat and n / 2 == 1.5
    assert n // 2 == 1 and pow(n, 2, 5) == 4 and type(pickle.loads(pickle.dumps(n))) is int


def test_runtime_float_is_a_runtime_input_of_tensor_ops():
    t = fg.tensor(np.arange(4, dtype=np.float32))
    compiled = []
    _fresh_programs()
    for lr in (0.1, 0.25, 3.0, 1e-7):
        x = RuntimeFloat(lr)
        out = (t * -x + (1 - x) * t) / (x * 2)
        assert out.dtype == t.dtype
        want = (t.numpy() * np.float32(-lr) + np.float32(1 - lr) * t.numpy()) / np.float32(lr * 2)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
        compiled.append(STATS.programs_compiled)
    assert compiled[1:] == [compiled[0]] * 3


def test_param_groups_store_plain_values_and_state_dict_matches_torch():
    problem = Problem(7)
    params = problem.params(fg)
    opt = custom_optimizer(fg, optim)([{"params": [params[0]]},
                                       {"params": [params[1]], "lr": 1}], lr=0.5)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    tparams = problem.params(torch)
    ref = custom_optimizer(torch, torch.optim)([{"params": [tparams[0]]},
                                                {"params": [tparams[1]], "lr": 1}], lr=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(ref, step_size=1, gamma=0.5)
    g0, g1 = opt.param_groups
    assert isinstance(g0, dict) and type(g0['lr']) is RuntimeFloat
    assert type(g1['lr']) is RuntimeInt and g1['lr'] == 1 and repr(g1['lr']) == "1"
    assert g0.get('lr') == 0.5 and type(g0.get('lr')) is RuntimeFloat
    assert type(g0['params']) is list and g0.get('missing', 3) == 3
    g0['lr'] = g0['lr'] * 2          # a runtime value written back is stored plain
    assert type(dict.__getitem__(g0, 'lr')) is float and g0['lr'] == 1.0
    g0['lr'] = 0.5
    for lib, o, s, ps in ((fg, opt, sched, params), (torch, ref, tsched, tparams)):
        for _ in range(3):
            o.zero_grad()
            problem.loss(lib, ps).backward()
            o.step()
            s.step()
    sd, tsd = opt.state_dict(), ref.state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert list(g) == list(tg)
        for k, v in g.items():
            assert type(v) is type(tg[k]), k
    assert [type(v) for v in sched.get_last_lr()] and sched.get_last_lr() == tsched.get_last_lr()
    assert json.dumps(sd["param_groups"]) == json.dumps(tsd["param_groups"])
    for v in (copy.deepcopy(opt.param_groups), pickle.loads(pickle.dumps(
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]))):
        assert all(type(g) is dict for g in v)
        assert all(type(x) in (float, int) for g in v for k, x in g.items()
                   if k in ("lr", "initial_lr", "momentum"))
    assert all(type(x) in (float, int) for x in copy.deepcopy(sched.state_dict())["_last_lr"])
    # load_state_dict restores plain values, read back as runtime values
    opt.load_state_dict(tsd)
    assert type(dict.__getitem__(opt.param_groups[0], "lr")) is float
    assert type(opt.param_groups[0]["lr"]) is RuntimeFloat
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    assert "lr: 0.0625" in repr(opt)
