"""Learning-rate schedulers against torch.optim.lr_scheduler: 100-step lr sequences.

Each scheduler drives an optimizer with two parameter groups (different lrs) in both
libraries; the lrs (and the momentum or beta1 that OneCycleLR and CyclicLR cycle) must agree at every
step within 1e-12 relative. The optimizers step without gradients, so only the schedule runs.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import fusegrad as fg
import fusegrad.optimlib as optim
from fusegrad.optimlib import lr_scheduler
from fusegrad.serialization import dumps, loads

STEPS = 100


def _optimizer(lib_optim, lib, kind: str = "SGD"):
    params = [lib.zeros(3, requires_grad=True), lib.zeros(2, requires_grad=True)]
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}]
    if kind == "Adam":
        return lib_optim.Adam(groups, lr=0.1, betas=(0.9, 0.99))
    return lib_optim.SGD(groups, lr=0.1, momentum=0.9)


SCHEDULES = {
    "StepLR": ("SGD", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "MultiStepLR": ("SGD", lambda m, o: m.MultiStepLR(o, milestones=[10, 30, 30, 75],
                                                      gamma=0.3)),
    "ExponentialLR": ("SGD", lambda m, o: m.ExponentialLR(o, gamma=0.97)),
    "CosineAnnealingLR": ("SGD", lambda m, o: m.CosineAnnealingLR(o, T_max=30, eta_min=1e-3)),
    "CosineAnnealingLR-Tmax100": ("SGD", lambda m, o: m.CosineAnnealingLR(o, T_max=STEPS)),
    "LambdaLR": ("SGD", lambda m, o: m.LambdaLR(o, lr_lambda=lambda e: 0.95 ** e)),
    "LambdaLR-per-group": ("SGD", lambda m, o: m.LambdaLR(
        o, lr_lambda=[lambda e: 1 / (1 + e), lambda e: (e // 10 + 1) * 0.5])),
    "LinearLR": ("SGD", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=40)),
    "LinearLR-decay": ("SGD", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                                      total_iters=60)),
    "OneCycleLR-cos": ("SGD", lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 2.0],
                                                        total_steps=STEPS)),
    "OneCycleLR-linear-three-phase": ("SGD", lambda m, o: m.OneCycleLR(
        o, max_lr=1.0, total_steps=STEPS, anneal_strategy="linear", three_phase=True,
        pct_start=0.4, div_factor=10.0, final_div_factor=100.0)),
    "OneCycleLR-epochs-adam": ("Adam", lambda m, o: m.OneCycleLR(
        o, max_lr=0.01, epochs=10, steps_per_epoch=10, base_momentum=0.8, max_momentum=0.9)),
    "OneCycleLR-no-momentum": ("SGD", lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, total_steps=STEPS, cycle_momentum=False)),
    "CyclicLR-triangular": ("SGD", lambda m, o: m.CyclicLR(
        o, base_lr=[0.01, 0.02], max_lr=[0.1, 0.3], step_size_up=7, step_size_down=13)),
    "CyclicLR-triangular2-adam": ("Adam", lambda m, o: m.CyclicLR(
        o, base_lr=0.001, max_lr=0.01, step_size_up=10, mode="triangular2")),
    "CyclicLR-exp-range": ("SGD", lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=6, mode="exp_range", gamma=0.97,
        base_momentum=[0.7, 0.75], max_momentum=0.95)),
    "CyclicLR-scale-fn-no-momentum": ("SGD", lambda m, o: m.CyclicLR(
        o, base_lr=0.05, max_lr=0.2, step_size_up=5, scale_fn=lambda x: 1 / (1 + 0.1 * x),
        scale_mode="iterations", cycle_momentum=False)),
    "ConstantLR": ("SGD", lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=12)),
    "CosineAnnealingWarmRestarts": ("SGD", lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=7, eta_min=1e-3)),
    "CosineAnnealingWarmRestarts-Tmult": ("Adam", lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=5, T_mult=2)),
    "MultiplicativeLR": ("SGD", lambda m, o: m.MultiplicativeLR(
        o, lr_lambda=lambda e: 0.9 if e % 3 else 1.0)),
    "PolynomialLR": ("Adam", lambda m, o: m.PolynomialLR(o, total_iters=60, power=2.0)),
    "SequentialLR-warmup-cosine": ("Adam", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=10), m.CosineAnnealingLR(o, T_max=90)],
        milestones=[10])),
    "SequentialLR-three": ("SGD", lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.5, total_iters=5), m.ExponentialLR(o, gamma=0.9),
            m.StepLR(o, step_size=10, gamma=0.5)], milestones=[5, 40])),
    "ChainedScheduler": ("SGD", lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=20), m.ExponentialLR(o, gamma=0.95)])),
}


def _record(opt) -> list[tuple]:
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups]


def _assert_close(got, want, what: str) -> None:
    """Equal structure; numbers equal to 1e-12 relative; None only where torch has None
    (``pytest.approx(None)`` is an error from pytest 9.2 on, so None is compared by identity)."""
    if want is None or got is None:
        assert got is want, what
    elif isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), what
        for a, b in zip(got, want):
            _assert_close(a, b, what)
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=0), what


def _run(lib_optim, lib, kind, make, steps=STEPS):
    opt = _optimizer(lib_optim, lib, kind)
    sched = make(lib_optim.lr_scheduler, opt)
    history = [_record(opt)]
    last = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        history.append(_record(opt))
        last.append(sched.get_last_lr())
    return history, last, sched


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lr_sequence_matches_torch(name):
    kind, make = SCHEDULES[name]
    got, got_last, _ = _run(optim, fg, kind, make)
    want, want_last, _ = _run(torch.optim, torch, kind, make)
    for step, (g, w) in enumerate(zip(got, want)):
        for gg, wg in zip(g, w):
            _assert_close(gg, wg, f"step {step}")
    for step, (g, w) in enumerate(zip(got_last, want_last)):
        _assert_close(g, w, f"get_last_lr at step {step}")


def _plateau_metrics() -> list[float]:
    rng = np.random.default_rng(0)
    # falls, stalls, falls a little, stalls: exercises patience, threshold and cooldown
    base = np.concatenate([np.linspace(1.0, 0.5, 20), np.full(30, 0.5), np.linspace(0.5, 0.45, 10),
                           np.full(40, 0.45)])
    return list(base + rng.uniform(-1e-5, 1e-5, base.shape))


@pytest.mark.parametrize("kwargs", [
    {},
    {"patience": 3, "factor": 0.5, "cooldown": 2, "min_lr": [1e-3, 1e-2]},
    {"mode": "max", "patience": 2, "threshold": 0.01, "threshold_mode": "abs"},
    {"patience": 0, "threshold": 1e-3, "threshold_mode": "rel", "eps": 1e-2, "min_lr": 0.05},
], ids=["defaults", "cooldown-min_lr", "max-abs", "patience0-eps"])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    metrics = _plateau_metrics()
    results = []
    for lib_optim, lib in ((optim, fg), (torch.optim, torch)):
        opt = _optimizer(lib_optim, lib)
        sched = lib_optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
        lrs = []
        for m in metrics:
            value = -m if kwargs.get("mode") == "max" else m
            sched.step(lib.tensor(value) if lib is fg else value)
            lrs.append(sched.get_last_lr())
        results.append(lrs)
    for step, (g, w) in enumerate(zip(*results)):
        _assert_close(g, w, f"step {step}")


def test_lr_scheduler_exported_under_old_name():
    assert issubclass(lr_scheduler._LRScheduler, lr_scheduler.LRScheduler)
    assert lr_scheduler._LRScheduler.__name__ == "_LRScheduler"


class CustomScheduler(lr_scheduler._LRScheduler):
    """The guide's section 3.3."""

    def __init__(self, optimizer, total_epochs):
        self.total_epochs = total_epochs
        super(CustomScheduler, self).__init__(optimizer)  # noqa: UP008 - the guide verbatim

    def get_lr(self):
        epoch = self.last_epoch
        return [base_lr * (1 - epoch/self.total_epochs)
                for base_lr in self.base_lrs]


class TorchCustomScheduler(torch.optim.lr_scheduler._LRScheduler):
    def __init__(self, optimizer, total_epochs):
        self.total_epochs = total_epochs
        super().__init__(optimizer)

    def get_lr(self):
        return [base_lr * (1 - self.last_epoch / self.total_epochs) for base_lr in self.base_lrs]


def test_guide_custom_scheduler_matches_torch():
    got, _, _ = _run(optim, fg, "SGD", lambda m, o: CustomScheduler(o, total_epochs=STEPS))
    want, _, _ = _run(torch.optim, torch, "SGD",
                      lambda m, o: TorchCustomScheduler(o, total_epochs=STEPS))
    for step, (g, w) in enumerate(zip(got, want)):
        for gg, wg in zip(g, w):
            _assert_close(gg, wg, f"step {step}")


def test_initial_lr_and_base_lrs_are_set_like_torch():
    opt = _optimizer(optim, fg)
    sched = lr_scheduler.StepLR(opt, step_size=3)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert sched.base_lrs == [0.1, 0.5] and sched.last_epoch == 0
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(_optimizer(optim, fg), step_size=3, last_epoch=5)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_state_dict_has_torchs_keys_and_resumes(name):
    kind, make = SCHEDULES[name]
    full, _, _ = _run(optim, fg, kind, make, steps=40)
    _, _, tsched = _run(torch.optim, torch, kind, make, steps=20)

    opt = _optimizer(optim, fg, kind)
    sched = make(lr_scheduler, opt)
    for _ in range(20):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert sorted(state) == sorted(tsched.state_dict())
    # through a checkpoint, as a training script would
    state = loads(dumps({"scheduler": state, "optimizer": opt.state_dict()}))

    opt2 = _optimizer(optim, fg, kind)
    sched2 = make(lr_scheduler, opt2)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for step in range(20, 40):
        opt2.step()
        sched2.step()
        _assert_close(_record(opt2), full[step + 1], f"step {step + 1}")


def test_reduce_lr_on_plateau_state_round_trips_with_infinite_best():
    opt = _optimizer(optim, fg)
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    state = loads(dumps(sched.state_dict()))
    assert state["best"] == math.inf
    sched2 = lr_scheduler.ReduceLROnPlateau(_optimizer(optim, fg), patience=5)
    sched2.load_state_dict(state)
    assert sched2.patience == 1 and sched2.best == math.inf


def test_schedulers_warn_when_stepped_before_the_optimizer():
    opt = _optimizer(optim, fg)
    sched = lr_scheduler.StepLR(opt, step_size=3)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt = _optimizer(optim, fg)
    sched = lr_scheduler.StepLR(opt, step_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        sched.step()


def test_schedule_changes_lr_without_recompiling():
    from fusegrad.tracer.realize import STATS
    w = fg.tensor(np.linspace(-1, 1, 8, dtype=np.float32), requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20)  # cycles beta1 as well
    counts = []
    for _ in range(20):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
        sched.step()
        counts.append(STATS.programs_compiled)
    assert counts[1:] == [counts[0]] * 19


@pytest.mark.parametrize("make, message", [
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0), "total_steps OR"),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=2.0),
     "pct_start"),
    (lambda o: lr_scheduler.OneCycleLR(o, max_lr=[1.0], total_steps=10), "same length"),
    (lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, mode="sawtooth"), "mode is invalid"),
    (lambda o: lr_scheduler.CyclicLR(o, [0.01], 0.1), "same length"),
    (lambda o: lr_scheduler.CyclicLR(fg.optim.Adagrad([fg.zeros(2, requires_grad=True)]),
                                     0.01, 0.1), "must support momentum or beta1"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0), "Starting multiplicative factor"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0), "Factor should be < 1.0"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="median"), "mode median is unknown"),
    (lambda o: lr_scheduler.ConstantLR(o, factor=1.5), "Constant multiplicative factor"),
    (lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=0), "positive integer T_0"),
    (lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0), "T_mult >= 1"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 3)], milestones=[2]),
     "one more than the number of milestone"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(_optimizer(optim, fg), 3)],
                                         milestones=[]), "same optimizer"),
    (lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.ReduceLROnPlateau(o)]),
     "does not support `ReduceLROnPlateau`"),
])
def test_invalid_options_raise_like_torch(make, message):
    with pytest.raises(ValueError, match=message):
        make(_optimizer(optim, fg))


@pytest.mark.parametrize("kind, message", [
    ("LambdaLR", "'float' object is not callable"),
    ("MultiplicativeLR", "lr_lambda should be a function, but got float"),
])
def test_lr_lambdas_that_are_not_callable_raise_like_torch(kind, message):
    for lib_optim, lib in ((optim, fg), (torch.optim, torch)):
        with pytest.raises(TypeError, match=message):
            getattr(lib_optim.lr_scheduler, kind)(_optimizer(lib_optim, lib), lr_lambda=[0.5, 0.5])


def test_warm_restarts_follow_fractional_epochs_like_torch():
    lrs = []
    for lib_optim, lib in ((optim, fg), (torch.optim, torch)):
        opt = _optimizer(lib_optim, lib)
        sched = lib_optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
        seen = []
        for epoch in range(12):
            for i in range(4):
                opt.step()
                sched.step(epoch + i / 4)
                seen.append(_record(opt))
        lrs.append(seen)
    _assert_close(lrs[0], lrs[1], "per-batch lrs")


def test_one_cycle_raises_when_stepped_past_total_steps():
    opt = _optimizer(optim, fg)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    for _ in range(5):
        opt.step()
        sched.step()
    opt.step()
    with pytest.raises(ValueError, match="Tried to step 6 times"):
        sched.step()
