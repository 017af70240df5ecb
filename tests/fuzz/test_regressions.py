"""Minimal reproductions of what the differential fuzzer (tests/fuzz) found."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from parity import using_backend

import fusegrad


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


@pytest.mark.parametrize("backend", ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)])
@pytest.mark.parametrize("op", ["minimum", "maximum"])
def test_minimum_of_nan_and_a_number_gives_both_sides_the_gradient(backend: str, op: str) -> None:
    """Found as ``minimum(var over an empty dim, x1)``: torch gives the gradient to each side
    unless that side loses, and where a NaN meets a number neither loses."""
    a, b = np.array([np.nan, 1.0, 2.0, 3.0]), np.array([0.5, 1.0, 1.5, 4.0])
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    getattr(torch, op)(ta, tb).sum().backward()
    with using_backend(backend):
        fa, fb = fusegrad.tensor(a, requires_grad=True), fusegrad.tensor(b, requires_grad=True)
        getattr(fusegrad, op)(fa, fb).sum().backward()
        np.testing.assert_array_equal(fa.grad.numpy(), ta.grad.numpy())
        np.testing.assert_array_equal(fb.grad.numpy(), tb.grad.numpy())


def _std_of_copies(mix: str) -> "Program":
    from graphgen import Program, Step
    return Program(inputs=((3,),), steps=(
        Step("matmul", ("v0 = x0 @ x0",), "v0"),
        Step("index", (f"v1 = {mix}",), "v1"),
        Step("reduce", ("v2 = lib.std(v1, (-1,), correction=0)",), "v2")))


def test_std_of_copies_is_ill_conditioned_in_torch_not_a_mismatch() -> None:
    """Found as ``std(gather(-stack([x0 @ x0] * 2), 0, [0, 0, 0]))``: three copies of one value.
    torch's rounding of the mean can leave a std of 2e-16 and an O(1) gradient of noise; fusegrad
    gives 0 (torch's own definition where the std is 0). The fuzzer must tell noise from a
    defect: torch's answer moves under a 1e-9 perturbation of the inputs."""
    from differential import run_fusegrad, run_torch, ill_conditioned, tolerance

    noisy = [np.random.default_rng(3).standard_normal(3)]  # torch: std 1.8e-15, grad O(1)
    program = _std_of_copies("(-lib.stack([v0, v0], 0))[lib.tensor([0, 0, 0])]")
    want, weights = run_torch(program, noisy, 0)
    assert np.abs(want.grads[0]).max() > 0.1  # torch's noise
    got = run_fusegrad(program, noisy, weights, "interpreter")
    np.testing.assert_array_equal(got.grads[0], np.zeros(3))
    assert ill_conditioned(program, noisy, 0, want, tolerance(program, want, noisy))

    calm_program = _std_of_copies("lib.stack([v0 * x0, x0], 0).sum(0)")  # a calm point
    calm = [np.array([0.3, -1.2, 0.7])]
    calm_want, _ = run_torch(calm_program, calm, 0)
    assert not ill_conditioned(calm_program, calm, 0, calm_want,
                               tolerance(calm_program, calm_want, calm))


@pytest.mark.parametrize("backend", ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)])
@pytest.mark.parametrize("overwrite", ["fill_", "zero_", "copy_"])
def test_an_overwritten_value_keeps_its_zero_gradient(backend: str, overwrite: str) -> None:
    """Found as ``v2 = x0.var(correction=1).clone(); v2.fill_(0.5)`` on one element: torch keeps
    the overwritten value in the graph with a zero gradient, which meets var's infinite
    derivative (no degrees of freedom) and gives NaN; cutting the edge gave 0."""
    def run(lib):
        x = lib.tensor([0.3], dtype=lib.float64, requires_grad=True)
        v = x.var(correction=1).clone()
        if overwrite == "copy_":
            v.copy_(lib.tensor(0.5, dtype=lib.float64))
        else:
            getattr(v, overwrite)(*([0.5] if overwrite == "fill_" else []))
        (v + x.sum()).backward()
        return x.grad.numpy()

    with pytest.warns(UserWarning):
        want = run(torch)
    with using_backend(backend):
        np.testing.assert_array_equal(run(fusegrad), want)


@pytest.mark.parametrize("backend", ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)])
@pytest.mark.parametrize("update", ["fill_", "add_", "mul_", "copy_"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_an_update_of_a_clone_leaves_the_original_alone(backend: str, update: str,
                                                        compiled: bool) -> None:
    """Found as ``v1 = x0.t().clone(); v1.fill_(0.5); v2 = -x0.t()``: the clone of a leaf that
    requires grad held the leaf's own buffer, and its update was written into it, so ``-x0``
    read 0.5 (both backends; the leaf itself still printed its old value)."""
    def step(lib, x):
        v1 = x.t().clone()
        if update == "copy_":
            v1.copy_(lib.full_like(x, 0.5))
        elif update == "fill_":
            v1.fill_(0.5)
        else:
            getattr(v1, update)(3.0)
        v2 = -x.t()
        (v1 * v1).sum().backward() if update != "fill_" else v2.sum().backward()
        return v1, v2

    value = np.array([0.25, -1.5])
    t = torch.tensor(value, requires_grad=True)
    want = [v.detach().numpy() for v in step(torch, t)] + [t.grad.numpy()]
    body = fusegrad.compile(lambda x: step(fusegrad, x)) if compiled else \
        (lambda x: step(fusegrad, x))
    with using_backend(backend):
        for _ in range(2 if compiled else 1):  # traced, then replayed
            x = fusegrad.tensor(value, requires_grad=True)
            got = [v.detach().numpy() for v in body(x)] + [x.grad.numpy()]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)
            np.testing.assert_array_equal(x.detach().numpy(), value)


@pytest.mark.parametrize("backend", ["interpreter", pytest.param("numba_cpu", marks=pytest.mark.numba)])
@pytest.mark.parametrize("case", ["nan gradient", "nan input", "ties along a dim"])
def test_the_gradient_of_max_goes_to_the_maximum_only(backend: str, case: str) -> None:
    """Found with seed 10000: ``x.max()`` fed into a std of one element (NaN gradient) made the
    whole gradient of ``x`` NaN; torch selects the maximum's elements (every NaN, where the
    maximum is NaN) and gives the others zero."""
    values = {"nan gradient": [[0.3, 2.0], [-0.5, 1.0]],
              "nan input": [[0.3, np.nan], [np.nan, 1.0]],
              "ties along a dim": [[3.0, 1.0], [3.0, 3.0]]}[case]

    def run(lib):
        x = lib.tensor(values, dtype=lib.float64, requires_grad=True)
        if case == "nan gradient":
            top = x.max()
            loss = lib.stack([top, top], 0).sum() * 0.7 + top.std(correction=1) * 1.3 \
                + x.abs().sum() * 0.2
        else:
            loss = x.max() if case == "nan input" else x.amax(1).sum()
        loss.backward()
        return x.grad.numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the std of one element
        want = run(torch)
    with using_backend(backend):
        np.testing.assert_array_equal(run(fusegrad), want)
