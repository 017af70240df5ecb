"""The op-parity helper shared by every op test: run one function in fusegrad and in PyTorch.

A :class:`Case` names a function of ``(lib, *inputs)`` that is written once and applied to both
libraries (``lib`` is the ``fusegrad`` or the ``torch`` module), and describes its inputs.
:func:`check_op` builds the same inputs in both, compares the outputs (dtype, shape, values),
then backpropagates ``sum(out * r)`` for a fixed random ``r`` and compares every input's gradient.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

import fusegrad
from fusegrad.tracer import realize as fg_realize

BACKENDS = ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)]


@dataclass(frozen=True)
class Input:
    """One input tensor: shape, dtype and how its values are drawn.

    Floats are uniform in ``[low, high)``; ``integral`` rounds them to whole numbers (to make
    ties and exact equalities likely); ``away_from_zero`` keeps ``|x| >= away_from_zero``.
    Integer inputs are uniform integers in ``[low, high)``; bool inputs are fair coin flips.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float = -2.0
    high: float = 2.0
    integral: bool = False
    away_from_zero: float = 0.0

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.dtype == "bool":
            return rng.random(self.shape) < 0.5
        if self.dtype.startswith("int"):
            return rng.integers(int(self.low), int(self.high), self.shape).astype(self.dtype)
        x = rng.uniform(self.low, self.high, self.shape)
        if self.away_from_zero:
            x = np.where(x < 0, -1.0, 1.0) * (np.abs(x) + self.away_from_zero)
        if self.integral:
            x = np.round(x)
        return np.asarray(x, dtype=self.dtype)


def f32(*shape: int, low: float = -2.0, high: float = 2.0, integral: bool = False,
        away_from_zero: float = 0.0) -> Input:
    return Input(tuple(shape), "float32", low, high, integral, away_from_zero)


def pos(*shape: int, low: float = 0.5, high: float = 2.0) -> Input:
    """Strictly positive floats (inputs of log, sqrt, a pow base, a divisor)."""
    return Input(tuple(shape), "float32", low, high)


def i64(*shape: int, low: int = -5, high: int = 5) -> Input:
    return Input(tuple(shape), "int64", low, high)


def boolean(*shape: int) -> Input:
    return Input(tuple(shape), "bool")


@dataclass(frozen=True)
class Case:
    """One parity check. ``fn(lib, *inputs)`` returns a tensor or a tuple of tensors."""

    name: str
    fn: Callable[..., Any]
    inputs: tuple[Input, ...]
    rtol: float = 1e-5
    atol: float = 1e-6

    def __repr__(self) -> str:
        return self.name


def case(name: str, fn: Callable[..., Any], *inputs: Input, rtol: float = 1e-5,
         atol: float = 1e-6) -> Case:
    return Case(name, fn, tuple(inputs), rtol, atol)


@contextmanager
def using_backend(name: str) -> Iterator[None]:
    previous = fg_realize._backend[0]
    fusegrad.set_backend(name)
    try:
        yield
    finally:
        fusegrad.set_backend(previous)


def _outputs(result: Any) -> list[Any]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _dtype_name(t: Any) -> str:
    return str(t.dtype).rsplit(".", 1)[-1]


def _compare(what: str, got: np.ndarray, want: np.ndarray, c: Case) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got, want, rtol=c.rtol, atol=c.atol, equal_nan=True,
                                   err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check_op(c: Case, backend: str) -> None:
    """Compare ``c`` in fusegrad (on ``backend``) with PyTorch: forward values and gradients."""
    rng = np.random.default_rng(zlib.crc32(c.name.encode()))
    arrays = [inp.draw(rng) for inp in c.inputs]
    grads_on = [a.dtype.kind == "f" for a in arrays]
    th_in = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grads_on)]
    with using_backend(backend):
        fg_in = [fusegrad.tensor(a, requires_grad=g) for a, g in zip(arrays, grads_on)]
        th_out, fg_out = _outputs(c.fn(torch, *th_in)), _outputs(c.fn(fusegrad, *fg_in))
        assert len(fg_out) == len(th_out), f"{len(fg_out)} outputs, torch gives {len(th_out)}"
        for i, (got, want) in enumerate(zip(fg_out, th_out)):
            assert _dtype_name(got) == _dtype_name(want), \
                f"output {i}: dtype {got.dtype} != torch {want.dtype}"
            assert tuple(got.shape) == tuple(want.shape), \
                f"output {i}: shape {tuple(got.shape)} != torch {tuple(want.shape)}"
            assert got.requires_grad == want.requires_grad, f"output {i}: requires_grad differs"
            _compare(f"output {i}", got.detach().numpy(), want.detach().numpy(), c)

        differentiable = [i for i, t in enumerate(th_out) if t.requires_grad]
        if not differentiable:
            return
        th_loss, fg_loss = 0, 0
        for i in differentiable:
            r = rng.standard_normal(tuple(th_out[i].shape)).astype(_dtype_name(th_out[i]))
            th_loss = th_loss + (th_out[i] * torch.tensor(r)).sum()
            fg_loss = fg_loss + (fg_out[i] * fusegrad.tensor(r)).sum()
        th_loss.backward()
        fg_loss.backward()
        for i, (got, want) in enumerate(zip(fg_in, th_in)):
            if want.grad is None:
                assert got.grad is None or not np.any(got.grad.numpy()), \
                    f"input {i}: torch has no gradient, fusegrad has {got.grad}"
                continue
            if got.grad is None:
                # an output that is piecewise constant in an input (sign) leaves no path to it
                assert not np.any(want.grad.numpy()), f"input {i}: no gradient (torch has one)"
                continue
            assert _dtype_name(got.grad) == _dtype_name(want.grad), f"input {i}: grad dtype"
            _compare(f"grad of input {i}", got.grad.numpy(), want.grad.numpy(), c)


def run_case(c: Case, backend: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Outputs and input gradients (of ``sum(out * r)``) of case ``c`` in fusegrad on ``backend``."""
    rng = np.random.default_rng(zlib.crc32(c.name.encode()))
    arrays = [inp.draw(rng) for inp in c.inputs]
    with using_backend(backend):
        fg_in = [fusegrad.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
        out = _outputs(c.fn(fusegrad, *fg_in))
        values = [o.detach().numpy().copy() for o in out]
        loss = None
        for o in out:
            if o.requires_grad:
                r = rng.standard_normal(tuple(o.shape)).astype(_dtype_name(o))
                term = (o * fusegrad.tensor(r)).sum()
                loss = term if loss is None else loss + term
        if loss is None:
            return values, []
        loss.backward()
        return values, [None if t.grad is None else t.grad.numpy().copy() for t in fg_in]


def check_backends_agree(c: Case) -> None:
    """numba_cpu gives the interpreter's outputs and gradients (same dtypes, shapes, values)."""
    ref_values, ref_grads = run_case(c, "interpreter")
    values, grads = run_case(c, "numba_cpu")
    for i, (got, want) in enumerate(zip(values, ref_values)):
        assert got.dtype == want.dtype, f"output {i}: dtype {got.dtype} != {want.dtype}"
        _compare(f"output {i} vs interpreter", got, want, c)
    for i, (got, want) in enumerate(zip(grads, ref_grads)):
        assert (got is None) == (want is None), f"input {i}: gradient presence differs"
        if got is not None:
            _compare(f"grad of input {i} vs interpreter", got, want, c)


def parity_tests(cases: list[Case]) -> tuple[Callable[..., None], ...]:
    """The standard tests of a list of cases, to bind at a test module's top level:
    unique names, each case against torch on every backend, numba_cpu against the interpreter.

        test_names_are_unique, test_matches_torch, test_numba_cpu_equals_interpreter = \\
            parity_tests(CASES)
    """
    def test_names_are_unique() -> None:
        names = [c.name for c in cases]
        assert len(names) == len(set(names))

    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("c", cases, ids=lambda c: c.name)
    def test_matches_torch(c: Case, backend: str) -> None:
        check_op(c, backend)

    @pytest.mark.numba
    @pytest.mark.parametrize("c", cases, ids=lambda c: c.name)
    def test_numba_cpu_equals_interpreter(c: Case) -> None:
        check_backends_agree(c)

    return test_names_are_unique, test_matches_torch, test_numba_cpu_equals_interpreter
