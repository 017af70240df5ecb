"""Activations (functional and modules) and dropout against PyTorch, on every backend.

Activations go through the shared op-parity helper (forward values and input gradients). Dropout
masks are random, so they are checked for their laws instead: the zero fraction, the 1/(1-p)
scale, whole-channel masks, gradients through the mask, and repetition under ``manual_seed``.
"""
from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from parity import BACKENDS, case, check_op, f32, using_backend
from scipy.special import erf as scipy_erf

import fusegrad as fg
import fusegrad.nnlib.functional as fgF
from fusegrad.nnlib.modules import activation, dropout

FG_NN = SimpleNamespace(**{k: v for m in (activation, dropout) for k, v in vars(m).items()
                           if isinstance(v, type)})


def _F(lib):
    return torch.nn.functional if lib is torch else fgF


def _nn(lib):
    return torch.nn if lib is torch else FG_NN


def _erf(lib, x):
    return torch.erf(x) if lib is torch else fgF.erf(x)


FUNCTIONAL = [
    case("erf", lambda lib, x: _erf(lib, x), f32(4, 50, low=-5, high=5)),
    case("erf_small", lambda lib, x: _erf(lib, x), f32(4, 50, low=-0.9, high=0.9)),
    case("erf_float64", lambda lib, x: _erf(lib, x.double()), f32(3, 7, low=-4, high=4)),
    case("relu", lambda lib, x: _F(lib).relu(x), f32(3, 5, integral=True)),
    case("leaky_relu", lambda lib, x: _F(lib).leaky_relu(x), f32(3, 5, integral=True)),
    case("leaky_relu_slope", lambda lib, x: _F(lib).leaky_relu(x, 0.2), f32(3, 5)),
    case("elu", lambda lib, x: _F(lib).elu(x), f32(3, 5, low=-4, high=4, integral=True)),
    case("elu_alpha", lambda lib, x: _F(lib).elu(x, alpha=0.5), f32(3, 5, low=-4, high=4)),
    case("elu_large", lambda lib, x: _F(lib).elu(x * 60), f32(3, 5)),
    case("selu", lambda lib, x: _F(lib).selu(x), f32(3, 5)),
    case("gelu", lambda lib, x: _F(lib).gelu(x), f32(4, 25, low=-6, high=6)),
    case("gelu_at_zero", lambda lib, x: _F(lib).gelu(x), f32(3, 5, integral=True)),
    # beyond |x| ~ 4 torch's own float32 tanh-form gradient is off by ~1e-6 (1 + tanh cancels)
    case("gelu_tanh", lambda lib, x: _F(lib).gelu(x, approximate="tanh"),
         f32(4, 25, low=-4, high=4)),
    case("silu", lambda lib, x: _F(lib).silu(x), f32(3, 5, low=-8, high=8, integral=True)),
    case("mish", lambda lib, x: _F(lib).mish(x), f32(3, 5, low=-5, high=5)),
    case("softplus", lambda lib, x: _F(lib).softplus(x), f32(4, 10, low=-30, high=30)),
    case("softplus_zero", lambda lib, x: _F(lib).softplus(x), f32(3, 5, integral=True)),
    case("softplus_beta", lambda lib, x: _F(lib).softplus(x, beta=2.0, threshold=5.0),
         f32(4, 10, low=-6, high=6)),
    case("hardtanh", lambda lib, x: _F(lib).hardtanh(x, -0.5, 1.0), f32(3, 5)),
    case("relu6", lambda lib, x: _F(lib).relu6(x * 4), f32(3, 5)),
    case("sigmoid", lambda lib, x: _F(lib).sigmoid(x), f32(3, 5, low=-30, high=30)),
    case("tanh", lambda lib, x: _F(lib).tanh(x), f32(3, 5)),
    case("softmax_dim0", lambda lib, x: _F(lib).softmax(x, dim=0), f32(3, 5)),
    case("log_softmax_dim1", lambda lib, x: _F(lib).log_softmax(x, 1), f32(2, 3, 5)),
    case("dropout_eval", lambda lib, x: _F(lib).dropout(x, 0.5, training=False), f32(3, 5)),
    case("dropout_p0", lambda lib, x: _F(lib).dropout(x, 0.0), f32(3, 5)),
    case("dropout_p1", lambda lib, x: _F(lib).dropout(x, 1.0), f32(3, 5)),
    case("dropout2d_eval", lambda lib, x: _F(lib).dropout2d(x, 0.5, training=False),
         f32(2, 3, 2, 2)),
]

MODULES = [
    ("ReLU", ()), ("LeakyReLU", ()), ("LeakyReLU", (0.3,)), ("ELU", (0.7,)), ("SELU", ()),
    ("GELU", ()), ("GELU", ("tanh",)), ("SiLU", ()), ("Mish", ()), ("Softplus", (2.0, 3.0)),
    ("Hardtanh", (-2.0, 0.5)), ("ReLU6", ()), ("Sigmoid", ()), ("Tanh", ()), ("Softmax", (1,)),
    ("LogSoftmax", (0,)), ("Dropout", (0.3,)), ("Dropout2d", (0.3,)),
]


def _module_case(name: str, args: tuple, training: bool):
    def fn(lib, x):
        m = getattr(_nn(lib), name)(*args)
        m.train(training)
        return m(x)
    return case(f"{name}{args}_{'train' if training else 'eval'}", fn, f32(2, 3, 2, 2))


MODULE_CASES = [_module_case(n, a, False) for n, a in MODULES] + \
    [_module_case(n, a, True) for n, a in MODULES if not n.startswith("Dropout")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", FUNCTIONAL + MODULE_CASES, ids=lambda c: c.name)
def test_matches_torch(c, backend):
    check_op(c, backend)


def test_case_names_are_unique():
    names = [c.name for c in FUNCTIONAL + MODULE_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name,args", MODULES)
def test_repr_matches_torch(name, args):
    assert repr(getattr(FG_NN, name)(*args)) == repr(getattr(torch.nn, name)(*args))


@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU", "ELU", "SiLU", "Hardtanh", "Dropout"])
def test_inplace_repr_matches_torch(name):
    assert repr(getattr(FG_NN, name)(inplace=True)) == repr(getattr(torch.nn, name)(inplace=True))


def test_erf_on_a_dense_grid():
    x = np.linspace(-8, 8, 200_001, dtype=np.float32)
    got = fgF.erf(fg.tensor(x)).numpy().astype(np.float64)
    assert np.abs(got - scipy_erf(x.astype(np.float64))).max() < 2e-7
    tiny = np.array([1e-30, 1e-10, -1e-5], dtype=np.float32)
    np.testing.assert_allclose(fgF.erf(fg.tensor(tiny)).numpy(), scipy_erf(tiny), rtol=1e-6)


def test_erf_gradient_on_a_dense_grid():
    x = np.linspace(-5, 5, 20_001)
    t = fg.tensor(x, dtype=fg.float32, requires_grad=True)
    fgF.erf(t).sum().backward()
    want = 2 / math.sqrt(math.pi) * np.exp(-x * x)
    assert np.abs(t.grad.numpy() - want).max() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_softplus_keeps_relative_accuracy_of_tiny_values(backend):
    x = np.array([-80.0, -30.0, -17.0, -1e-3, 0.0, 1e-3], dtype=np.float32)
    want = torch.nn.functional.softplus(torch.tensor(x)).numpy()
    with using_backend(backend):
        np.testing.assert_allclose(fgF.softplus(fg.tensor(x)).numpy(), want, rtol=1e-6, atol=0)


def test_activations_are_finite_with_gradients_at_extremes():
    x = fg.tensor([-1e30, -100.0, -30.0, 0.0, 30.0, 100.0, 1e30], requires_grad=True)
    out = fgF.gelu(x) + fgF.softplus(x) + fgF.elu(x) + fgF.silu(x) + fgF.erf(x)
    out.sum().backward()
    assert np.isfinite(out.detach().numpy()).all()
    assert np.isfinite(x.grad.numpy()).all()


def test_inplace_activation_overwrites_its_input():
    for name in ("relu", "leaky_relu", "elu", "silu"):
        x = fg.tensor([-1.0, 0.5, 2.0])
        out = getattr(fgF, name)(x, inplace=True)
        assert out is x
        want = getattr(torch.nn.functional, name)(torch.tensor([-1.0, 0.5, 2.0]))
        np.testing.assert_allclose(x.numpy(), want.numpy(), rtol=1e-6)


def test_inplace_activation_on_a_leaf_that_requires_grad_fails():
    with pytest.raises(RuntimeError, match="leaf"):
        fgF.relu(fg.ones(3, requires_grad=True), inplace=True)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        FG_NN.GELU("fast")


def test_softmax_without_dim_uses_torchs_legacy_choice():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = torch.nn.Softmax()(torch.tensor(x)).numpy()
        got = FG_NN.Softmax()(fg.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_zero_fraction_and_scale(p, backend):
    n = 20_000
    with using_backend(backend):
        fg.manual_seed(0)
        out = fgF.dropout(fg.ones(n), p).numpy()
    zero = out == 0
    assert abs(zero.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[~zero], 1 / (1 - p), rtol=1e-6)


def test_dropout_masks_repeat_under_manual_seed_and_agree_across_backends():
    masks = []
    for backend in ("interpreter", "numba_cpu"):
        with using_backend(backend):
            fg.manual_seed(123)
            first = fgF.dropout(fg.ones(4, 50), 0.5).numpy()
            second = fgF.dropout(fg.ones(4, 50), 0.5).numpy()
        assert not np.array_equal(first, second), "each call draws a new mask"
        masks.append((first, second))
    np.testing.assert_array_equal(masks[0][0], masks[1][0])
    np.testing.assert_array_equal(masks[0][1], masks[1][1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_gradient_goes_through_the_mask(backend):
    with using_backend(backend):
        fg.manual_seed(1)
        x = fg.tensor(np.linspace(1, 2, 40, dtype=np.float32), requires_grad=True)
        out = FG_NN.Dropout(0.4)(x)
        out.sum().backward()
        kept = out.detach().numpy() != 0
        np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.6, 0.0), rtol=1e-6)


def test_dropout_module_is_identity_in_eval():
    m = FG_NN.Dropout(0.5).eval()
    x = fg.randn(3, 4)
    assert m(x) is x


def test_dropout_inplace_overwrites_its_input():
    fg.manual_seed(2)
    x = fg.ones(100) * 1.0
    out = fgF.dropout(x, 0.5, inplace=True)
    assert out is x and (x.numpy() == 0).any()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        FG_NN.Dropout(p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fgF.dropout(fg.ones(3), p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout2d_zeroes_whole_channels(backend):
    with using_backend(backend):
        fg.manual_seed(3)
        out = FG_NN.Dropout2d(0.5)(fg.ones(40, 30, 2, 3)).numpy()
    per_channel = out.reshape(40, 30, -1)
    assert (per_channel == per_channel[:, :, :1]).all(), "a channel is kept or dropped whole"
    dropped = per_channel[:, :, 0] == 0
    assert abs(dropped.mean() - 0.5) < 4 * math.sqrt(0.25 / dropped.size)
    np.testing.assert_allclose(per_channel[~dropped], 2.0)


def test_dropout2d_reads_3d_input_as_batch_channel_length_like_torch():
    with pytest.warns(UserWarning, match=r"\(N, C, L\)"):
        out = fgF.dropout2d(fg.ones(8, 6, 5), 0.5).numpy()
    assert (out == out[:, :, :1]).all()
    assert len({tuple(row) for row in (out[:, :, 0] == 0)}) > 1, "masks differ per sample"


def test_dropout1d_and_3d_zero_channels():
    out1 = fgF.dropout1d(fg.ones(6, 9), 0.5).numpy()         # (C, L): one draw per channel
    assert (out1 == out1[:, :1]).all()
    out3 = fgF.dropout3d(fg.ones(2, 6, 2, 2, 2), 0.5).numpy()
    assert (out3.reshape(2, 6, -1) == out3.reshape(2, 6, -1)[:, :, :1]).all()
    with pytest.raises(RuntimeError, match="2D or 3D"):
        fgF.dropout1d(fg.ones(2, 3, 4, 5))
