"""Run one generated program on torch and on fusegrad in every realization mode, and compare.

Each run computes the program's outputs (its sinks) and the gradients of every input w.r.t.
``sum(out * r)`` over the float outputs (``r`` fixed random weights), all in float64.
fusegrad runs in four realization modes on numba_cpu, plus the first mode on the interpreter
(compared with torch, and with numba_cpu's ``all`` run):

- ``all``: build everything, backward, then read: one program computes it all;
- ``each``: every intermediate is realized as soon as it is made (and compared too);
- ``forward_first``: the outputs are realized before ``backward()`` is called;
- ``compiled``: ``fusegrad.compile`` of a function that computes the loss, calls backward and
  returns outputs and grads; traced on one set of inputs, then replayed on NEW values.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from graphgen import Program
from parity import using_backend

import fusegrad

MODES = ("all", "each", "forward_first", "compiled", "interpreter")
STATS: Counter[str] = Counter()  # graphs, ops, ops:<kind>, mode:<mode>, not_replayed


@dataclass
class Run:
    """What one run produced: outputs by name (and intermediates as ``name@each``)."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    requires_grad: dict[str, bool] = field(default_factory=dict)
    grads: list[np.ndarray] = field(default_factory=list)


def draw_inputs(program: Program, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2.0, 2.0, shape) for shape in program.inputs]


def _array(t: Any) -> np.ndarray:
    return np.array(t.detach().numpy(), copy=True)


def _loss(lib: Any, outs: list[Any], weights: list[np.ndarray | None]) -> Any:
    loss = None
    for o, r in zip(outs, weights):
        if r is not None:
            term = (o * lib.tensor(r)).sum()
            loss = term if loss is None else loss + term
    return loss


def _finish(lib: Any, program: Program, outs: list[Any], xs: list[Any],
            grads: list[Any], run: Run) -> Run:
    for name, o in zip(program.outputs, outs):
        run.values[name] = _array(o)
        run.requires_grad[name] = bool(o.requires_grad)
    run.grads = [np.zeros(tuple(x.shape)) if g is None else _array(g) for x, g in zip(xs, grads)]
    return run


def run_torch(program: Program, inputs: list[np.ndarray], weights_seed: int
              ) -> tuple[Run, list[np.ndarray | None]]:
    """The reference run, every intermediate kept; also draws the loss weights ``r``."""
    run = Run()

    def hook(name: str, value: torch.Tensor) -> None:
        run.values[f"{name}@each"] = _array(value)

    xs = [torch.tensor(a, requires_grad=True) for a in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # var with <= 0 degrees of freedom
        outs = program.function(hooks=True)(torch, hook, *xs)
        rng = np.random.default_rng(weights_seed)
        weights = [rng.standard_normal(tuple(o.shape)).astype(str(o.dtype).split(".")[-1])
                   if o.requires_grad else None for o in outs]
        loss = _loss(torch, outs, weights)
        if loss is not None:
            loss.backward()
    return _finish(torch, program, outs, xs, [x.grad for x in xs], run), weights


def run_fusegrad(program: Program, inputs: list[np.ndarray], weights: list[np.ndarray | None],
                 mode: str) -> Run:
    """One fusegrad run in realization ``mode`` (``interpreter``: mode ``all`` on it)."""
    run = Run()
    with using_backend("interpreter" if mode == "interpreter" else "numba_cpu"):
        xs = [fusegrad.tensor(a, requires_grad=True) for a in inputs]
        if mode == "each":
            def hook(name: str, value: Any) -> None:
                fusegrad.realize(value)
                run.values[f"{name}@each"] = _array(value)
            outs = program.function(hooks=True)(fusegrad, hook, *xs)
        else:
            outs = program.function()(fusegrad, *xs)
        if mode == "forward_first":
            fusegrad.realize(*outs)
        loss = _loss(fusegrad, outs, weights)
        if loss is not None:
            loss.backward()
        return _finish(fusegrad, program, outs, xs, [x.grad for x in xs], run)


def run_compiled(program: Program, input_sets: list[list[np.ndarray]],
                 weights: list[np.ndarray | None]) -> list[Run]:
    """Trace a compiled forward+backward on the first input set, replay it on the others."""
    fn = program.function()

    def step(*xs: Any) -> tuple[list[Any], list[Any]]:
        outs = fn(fusegrad, *xs)
        loss = _loss(fusegrad, outs, weights)
        if loss is not None:
            loss.backward()
        return outs, [x.grad for x in xs]

    compiled = fusegrad.compile(step)
    runs = []
    with using_backend("numba_cpu"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for inputs in input_sets:
            xs = [fusegrad.tensor(a, requires_grad=True) for a in inputs]
            outs, grads = compiled(*xs)
            runs.append(_finish(fusegrad, program, outs, xs, grads, Run()))
    if compiled.hits != len(input_sets) - 1:
        STATS["not_replayed"] += 1
        raise AssertionError(f"compiled: {compiled.hits} replays of {len(input_sets) - 1}; "
                             f"warnings: {[str(w.message) for w in caught]}")
    return runs


def tolerance(program: Program, want: Run, inputs: list[np.ndarray]) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing a fusegrad run with torch's.

    Both libraries compute in float64 (unit roundoff 1.1e-16) with different but correct
    orders and formulas. The generator keeps every op well conditioned (safe domains, bounded
    exponents), so each op adds at most a few ulps of relative error to what it reads:
    ``1e-10`` per op of depth leaves a wide margin over rounding, yet a value computed in
    float32 by mistake (error ~6e-8) or any wrong element still fails. Absolute error is
    relative to the largest magnitude in the computation, since cancellation in sums leaves
    an error of about ``eps * max|term|`` on results near zero. A program that casts to float32
    on purpose computes in float32 there in both libraries, with their own roundings.
    """
    arrays = [*want.values.values(), *want.grads, *inputs]
    float32 = any(a.dtype == np.float32 for a in arrays)
    rtol = (1e-6 if float32 else 1e-10) * (len(program.steps) + 1)
    finite = [np.abs(a[np.isfinite(a)]).max(initial=0.0) for a in arrays
              if a.dtype.kind == "f" and a.size]
    return rtol, rtol * max([1.0, *finite])


def compare(program: Program, got: Run, want: Run, tol: tuple[float, float], what: str,
            check_requires_grad: bool = True) -> None:
    """Assert ``got`` matches ``want`` (the names ``got`` has: intermediates only in ``each``)."""
    rtol, atol = tol
    for name, g in got.values.items():
        w = want.values[name]
        assert g.dtype == w.dtype, f"{what}: {name} dtype {g.dtype} != torch {w.dtype}"
        assert g.shape == w.shape, f"{what}: {name} shape {g.shape} != torch {w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{what}: {name}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: {name}")
    for name, flag in got.requires_grad.items() if check_requires_grad else ():
        assert flag == want.requires_grad[name], f"{what}: {name} requires_grad {flag}"
    for i, (g, w) in enumerate(zip(got.grads, want.grads)):
        assert g.dtype == w.dtype, f"{what}: grad of x{i} dtype {g.dtype} != torch {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"{what}: grad of x{i}")


def ill_conditioned(program: Program, inputs: list[np.ndarray], seed: int, want: Run,
                    tol: tuple[float, float], tries: int = 2) -> bool:
    """Whether torch's own answer at ``inputs`` moves by more than ``tol`` when the inputs move
    by a relative 1e-9: then a difference from torch is rounding noise, not a defect.

    Example: the std of three copies of one value is 0 in exact arithmetic, but torch's
    ``mean`` may round so that the std comes out 2e-16 and its gradient ``(x - mean) / std``
    is O(1) noise, which changes with every perturbation; fusegrad gives 0, as torch defines
    the gradient where the std is 0.
    """
    rng = np.random.default_rng(seed + 7919)
    for _ in range(tries):
        moved = [a * (1.0 + 1e-9 * rng.uniform(-1.0, 1.0, a.shape)) if a.dtype.kind == "f"
                 else a for a in inputs]
        try:
            compare(program, run_torch(program, moved, seed)[0], want, tol, "torch, moved")
        except AssertionError:
            return True
    return False


def check_program(program: Program, seed: int, modes: tuple[str, ...] = MODES) -> None:
    """Run ``program`` on inputs drawn from ``seed`` in every mode; raise on any difference
    from torch, unless torch's own answer there is rounding noise (``ill_conditioned``)."""
    first, second = draw_inputs(program, seed), draw_inputs(program, seed + 1)
    want, weights = run_torch(program, first, seed)
    tol = tolerance(program, want, first)
    STATS["graphs"] += 1
    STATS["ops"] += len(program.steps)
    STATS.update(f"ops:{s.kind}" for s in program.steps)

    def against_torch(got: Run, ref: Run, inputs: list[np.ndarray], ref_tol: tuple[float, float],
                      what: str, check_requires_grad: bool = True) -> None:
        try:
            compare(program, got, ref, ref_tol, what, check_requires_grad)
        except AssertionError:
            if not ill_conditioned(program, inputs, seed, ref, ref_tol):
                raise
            STATS["ill_conditioned"] += 1

    by_mode: dict[str, Run] = {}
    for mode in modes:
        STATS[f"mode:{mode}"] += 1
        if mode == "compiled":
            want_second, _ = run_torch(program, second, seed)
            runs = run_compiled(program, [first, second], weights)
            for i, (got, ref, inputs) in enumerate(zip(runs, (want, want_second), (first, second))):
                ref_tol = tol if i == 0 else tolerance(program, ref, second)
                # a replay returns outputs without requires_grad when the body ran backward:
                # test_regressions.test_replayed_output_keeps_requires_grad (xfail)
                against_torch(got, ref, inputs, ref_tol, f"compiled call {i + 1}",
                              check_requires_grad=i == 0)
        else:
            by_mode[mode] = run_fusegrad(program, first, weights, mode)
            against_torch(by_mode[mode], want, first, tol, mode)
    if "all" in by_mode and "interpreter" in by_mode:
        # the compiled kernels against the numpy reference, not only both against torch
        compare(program, by_mode["all"], by_mode["interpreter"], tol, "numba_cpu vs interpreter")


def checker(modes: tuple[str, ...] = MODES) -> Callable[[Program, int], None]:
    """``check_program`` that prints the program and how to replay it when it fails."""
    def check(program: Program, seed: int) -> None:
        try:
            check_program(program, seed, modes)
        except Exception as e:
            STATS["mismatches"] += 1
            raise AssertionError(f"{type(e).__name__}: {e}\n\nprogram (seed {seed}):\n"
                                 f"{program.describe()}") from e
    return check
