"""``nnlib.init`` (formulas and sample statistics) and ``nnlib.utils`` (clipping, vectors).

Initialisers are random, so they are checked against torch's formulas through statistics of a
large tensor, each within a few standard errors, and for their exact laws (bounds,
orthogonality). Clipping is compared with torch's on the same gradients.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
from fusegrad.nnlib import init, utils
from fusegrad.nnlib.parameter import Parameter

SHAPES = [(300, 200), (64, 16, 3, 3), (50, 400)]
NONLINEARITIES = [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                  ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]


@pytest.mark.parametrize("nonlinearity,param", NONLINEARITIES)
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == \
        pytest.approx(torch.nn.init.calculate_gain(nonlinearity, param))


def test_calculate_gain_rejects_unknown_input():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "0.1")


@pytest.mark.parametrize("shape", SHAPES + [(3, 4, 5)])
def test_fans_match_torch(shape):
    assert init._calculate_fan_in_and_fan_out(fg.empty(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))


def test_fans_need_two_dims():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(fg.empty(5))


def _values(t) -> np.ndarray:
    return t.detach().numpy().astype(np.float64).ravel()


def _check_uniform(values: np.ndarray, low: float, high: float) -> None:
    n = values.size
    assert values.min() >= low and values.max() <= high
    width = high - low
    assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width
    assert abs(values.mean() - (low + high) / 2) < 5 * width / math.sqrt(12 * n)
    assert values.std() == pytest.approx(width / math.sqrt(12), rel=0.02)


def _check_normal(values: np.ndarray, mean: float, std: float) -> None:
    n = values.size
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(n)
    assert values.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_uniform(shape):
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(fg.empty(*shape))
    bound = 1.5 * math.sqrt(6 / (fan_in + fan_out))
    _check_uniform(_values(init.xavier_uniform_(fg.empty(*shape), gain=1.5)), -bound, bound)
    ref = torch.nn.init.xavier_uniform_(torch.empty(*shape), gain=1.5)
    assert ref.abs().max().item() <= bound


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_normal(shape):
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(fg.empty(*shape))
    std = 0.5 * math.sqrt(2 / (fan_in + fan_out))
    _check_normal(_values(init.xavier_normal_(fg.empty(*shape), gain=0.5)), 0.0, std)
    ref = torch.nn.init.xavier_normal_(torch.empty(*shape), gain=0.5).numpy().ravel()
    assert ref.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity,a", [("leaky_relu", 0), ("leaky_relu", math.sqrt(5)),
                                            ("relu", 0), ("tanh", 0)])
def test_kaiming_uniform_and_normal(shape, mode, nonlinearity, a):
    fan = init._fan(fg.empty(*shape), mode)
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    t = init.kaiming_uniform_(fg.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    _check_uniform(_values(t), -math.sqrt(3) * std, math.sqrt(3) * std)
    t = init.kaiming_normal_(fg.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    _check_normal(_values(t), 0.0, std)
    ref = torch.nn.init.kaiming_normal_(torch.empty(*shape), a=a, mode=mode,
                                        nonlinearity=nonlinearity).numpy().ravel()
    assert ref.std() == pytest.approx(std, rel=0.03)


def test_kaiming_rejects_bad_mode_and_skips_empty_tensors():
    with pytest.raises(ValueError, match="fan_avg not supported"):
        init.kaiming_uniform_(fg.empty(3, 4), mode="fan_avg")
    with pytest.warns(UserWarning, match="no-op"):
        init.kaiming_normal_(fg.empty(0, 4))


def test_uniform_normal_constant_zeros_ones_eye():
    _check_uniform(_values(init.uniform_(fg.empty(200, 300), -2.0, 3.0)), -2.0, 3.0)
    _check_normal(_values(init.normal_(fg.empty(200, 300), 1.5, 0.25)), 1.5, 0.25)
    assert (init.constant_(fg.empty(3, 4), 0.3).numpy() == np.float32(0.3)).all()
    assert (init.zeros_(fg.ones(3, 4)).numpy() == 0).all()
    assert (init.ones_(fg.zeros(3, 4)).numpy() == 1).all()
    np.testing.assert_array_equal(init.eye_(fg.empty(3, 5)).numpy(), np.eye(3, 5))


def test_trunc_normal_stays_in_bounds_with_the_truncated_moments():
    from scipy.stats import truncnorm
    values = _values(init.trunc_normal_(fg.empty(300, 300), mean=0.5, std=2.0, a=-1.0, b=3.0))
    assert values.min() >= -1.0 and values.max() <= 3.0
    dist = truncnorm((-1.0 - 0.5) / 2.0, (3.0 - 0.5) / 2.0, loc=0.5, scale=2.0)
    assert abs(values.mean() - dist.mean()) < 5 * dist.std() / math.sqrt(values.size)
    assert values.std() == pytest.approx(dist.std(), rel=0.02)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (6, 4, 3, 3), (8, 8)])
def test_orthogonal(shape):
    t = init.orthogonal_(fg.empty(*shape), gain=2.0)
    assert tuple(t.shape) == shape
    q = t.numpy().reshape(shape[0], -1).astype(np.float64) / 2.0
    small = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    np.testing.assert_allclose(small, np.eye(len(small)), atol=1e-5)


def test_orthogonal_needs_two_dims():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(fg.empty(4))


def test_initializers_fill_parameters_in_place_without_grad():
    p = Parameter(fg.empty(4, 3))
    for fn in (init.zeros_, init.ones_, lambda t: init.constant_(t, 2.0), init.xavier_uniform_,
               init.kaiming_normal_, init.orthogonal_, init.trunc_normal_, init.eye_):
        assert fn(p) is p
        assert p.requires_grad and p.is_leaf and p.grad is None
    (p * 2).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), np.full((4, 3), 2.0))


def test_initializers_repeat_under_manual_seed():
    draws = []
    for _ in range(2):
        fg.manual_seed(5)
        draws.append([init.kaiming_uniform_(fg.empty(4, 3)).numpy(),
                      init.orthogonal_(fg.empty(3, 3)).numpy(),
                      init.trunc_normal_(fg.empty(5)).numpy()])
    for a, b in zip(*draws):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- clipping
def _grads(seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in ((3, 4), (5,), (2, 2))]


def _params_with_grads(lib, grads: list[np.ndarray], skip: int | None = None):
    params = []
    for i, g in enumerate(grads):
        p = lib.zeros(*g.shape, requires_grad=True)
        if i != skip:
            p.grad = lib.tensor(g)
        params.append(p)
    return params


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.0, math.inf, 0])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, backend):
    grads = _grads(1)
    t_params = _params_with_grads(torch, grads, skip=1)
    with using_backend(backend):
        f_params = _params_with_grads(fg, grads, skip=1)
        got = utils.clip_grad_norm_(f_params, max_norm, norm_type=norm_type)
        want = torch.nn.utils.clip_grad_norm_(t_params, max_norm, norm_type=norm_type)
        assert got.item() == pytest.approx(want.item(), rel=1e-5)
        for f, t in zip(f_params, t_params):
            if t.grad is None:
                assert f.grad is None
            else:
                np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_of_one_tensor_and_of_nothing():
    p = fg.zeros(3, requires_grad=True)
    p.grad = fg.tensor([3.0, 4.0, 0.0])
    assert utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    assert utils.clip_grad_norm_([fg.zeros(2, requires_grad=True)], 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_error_if_nonfinite(bad):
    grads = _grads(2)
    grads[0][1, 1] = bad
    params = _params_with_grads(fg, grads)
    with pytest.raises(RuntimeError, match=r"total norm of order 2.0 for gradients from "
                                           r"`parameters` is non-finite"):
        utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    t_params = _params_with_grads(torch, grads)
    want = torch.nn.utils.clip_grad_norm_(t_params, 1.0).item()
    got = utils.clip_grad_norm_(params, 1.0).item()
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_clip_grad_norm_stays_lazy_without_the_error_check():
    params = _params_with_grads(fg, _grads(3))
    fg.realize(*(p.grad for p in params))
    total = utils.clip_grad_norm_(params, 0.1)
    assert total.node.op != "buffer" and params[0].grad.node.op != "buffer"


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_value_matches_torch(backend):
    grads = _grads(4, scale=2.0)
    t_params = _params_with_grads(torch, grads, skip=0)
    torch.nn.utils.clip_grad_value_(t_params, 0.7)
    with using_backend(backend):
        f_params = _params_with_grads(fg, grads, skip=0)
        assert utils.clip_grad_value_(f_params, 0.7) is None
        assert f_params[0].grad is None
        for f, t in zip(f_params[1:], t_params[1:]):
            np.testing.assert_array_equal(f.grad.numpy(), t.grad.numpy())


def test_parameters_to_vector_and_back():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (4,), (1, 2, 2))]
    f_params = [Parameter(fg.tensor(a)) for a in arrays]
    t_params = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    vec = utils.parameters_to_vector(f_params)
    want = torch.nn.utils.parameters_to_vector(t_params)
    np.testing.assert_array_equal(vec.detach().numpy(), want.detach().numpy())
    (vec * fg.arange(vec.numel()).float()).sum().backward()
    np.testing.assert_array_equal(f_params[0].grad.numpy(), np.arange(6).reshape(2, 3))

    new = rng.standard_normal(vec.numel()).astype(np.float32)
    utils.vector_to_parameters(fg.tensor(new), f_params)
    torch.nn.utils.vector_to_parameters(torch.tensor(new), t_params)
    for f, t in zip(f_params, t_params):
        assert f.requires_grad and f.is_leaf
        np.testing.assert_array_equal(f.detach().numpy(), t.detach().numpy())
    with pytest.raises(TypeError, match="expected fusegrad.Tensor"):
        utils.vector_to_parameters(new, f_params)
