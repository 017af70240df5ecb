"""Convolution, pooling and flatten layers against PyTorch, on every backend.

The functional forms go through the op-parity helper: forward values and the gradients of the
input, the weight and the bias. The layers are checked for torch's defaults (initialisation,
``repr``), wired into a small CNN trained side by side with torch's, and for clear errors.
Shapes are tiny: each numba_cpu case compiles a few kernels.

Convolution tolerances are rtol/atol 1e-5 (the default atol is 1e-6): fusegrad lowers a
convolution to im2col + one BLAS product, which sums the C*K products of each output in another
order than torch's kernels, and the outputs are sums of up to a few dozen terms of size ~1.
"""
from __future__ import annotations

import re

import math
import os

import numpy as np
import pytest
import torch
from parity import BACKENDS, case, check_op, f32, using_backend

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.nnlib import functional_conv as fgF
from fusegrad.nnlib.modules import conv, flatten, pooling
from fusegrad.nnlib.modules.conv import Conv1d, Conv2d, Conv3d
from fusegrad.nnlib.modules.flatten import Flatten, Unflatten
from fusegrad.nnlib.modules.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from fusegrad.tracer.realize import STATS

HERE = os.path.basename(__file__)
# torch warns that it copies the input for 'same' padding of an even kernel; fusegrad does not
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def _F(lib):
    return torch.nn.functional if lib is torch else fgF


def conv_case(name, fn, *inputs):
    return case(name, fn, *inputs, rtol=1e-5, atol=1e-5)


CONV = [
    conv_case("conv1d_stride_pad", lambda lib, x, w, b: _F(lib).conv1d(x, w, b, 2, 1),
              f32(2, 3, 9), f32(4, 3, 3), f32(4)),
    conv_case("conv1d_same_dilation_groups",
              lambda lib, x, w: _F(lib).conv1d(x, w, None, 1, "same", 2, 2),
              f32(2, 4, 7), f32(6, 2, 4)),
    conv_case("conv2d_basic", lambda lib, x, w, b: _F(lib).conv2d(x, w, b),
              f32(2, 3, 6, 5), f32(4, 3, 3, 3), f32(4)),
    conv_case("conv2d_stride_tuple_padding",
              lambda lib, x, w, b: _F(lib).conv2d(x, w, b, (2, 1), (1, 2)),
              f32(2, 3, 7, 5), f32(4, 3, 3, 2), f32(4)),
    # even kernel with dilation: 'same' pads one more element at the end, as torch
    conv_case("conv2d_same_even_kernel_dilation",
              lambda lib, x, w: _F(lib).conv2d(x, w, None, 1, "same", (2, 1)),
              f32(2, 2, 6, 5), f32(3, 2, 2, 4)),
    conv_case("conv2d_valid_dilation_stride",
              lambda lib, x, w, b: _F(lib).conv2d(x, w, b, 2, "valid", 2),
              f32(1, 2, 9, 8), f32(3, 2, 3, 2), f32(3)),
    conv_case("conv2d_groups", lambda lib, x, w, b: _F(lib).conv2d(x, w, b, 1, 1, 1, 2),
              f32(2, 4, 5, 5), f32(6, 2, 3, 3), f32(6)),
    conv_case("conv2d_depthwise", lambda lib, x, w: _F(lib).conv2d(x, w, None, 2, 1, 1, 3),
              f32(2, 3, 6, 6), f32(3, 1, 3, 3)),
    # padding larger than the kernel: some taps only ever read padding
    conv_case("conv2d_wide_padding", lambda lib, x, w: _F(lib).conv2d(x, w, None, 1, 3),
              f32(1, 2, 3, 3), f32(2, 2, 2, 2)),
    conv_case("conv2d_unbatched", lambda lib, x, w, b: _F(lib).conv2d(x, w, b, 1, 1),
              f32(3, 4, 4), f32(2, 3, 3, 3), f32(2)),
    conv_case("conv3d_stride_pad", lambda lib, x, w, b: _F(lib).conv3d(x, w, b, (1, 2, 1), 1),
              f32(2, 2, 4, 5, 3), f32(3, 2, 3, 3, 2), f32(3)),
    conv_case("conv3d_groups_dilation", lambda lib, x, w: _F(lib).conv3d(x, w, None, 1, 0, 2, 2),
              f32(1, 4, 5, 5, 5), f32(4, 2, 2, 2, 2)),
    case("unfold", lambda lib, x: _F(lib).unfold(x, (2, 3), 1, 1, (2, 1)), f32(2, 3, 5, 4)),
]

POOL = [
    case("max_pool2d_k2", lambda lib, x: _F(lib).max_pool2d(x, 2), f32(2, 3, 6, 7)),
    case("max_pool2d_k3_s2_p1", lambda lib, x: _F(lib).max_pool2d(x, 3, 2, 1), f32(2, 2, 7, 6)),
    # ties: integer-valued inputs and the zeros after a ReLU; the first maximum of each window
    # must take the whole gradient, as in torch
    case("max_pool2d_ties_integral", lambda lib, x: _F(lib).max_pool2d(x, 2),
         f32(2, 3, 6, 6, integral=True)),
    case("max_pool2d_ties_relu", lambda lib, x: _F(lib).max_pool2d(lib.relu(x), 3, 1, 1),
         f32(2, 2, 5, 6, integral=True)),
    case("max_pool2d_dilation_ceil", lambda lib, x: _F(lib).max_pool2d(x, 2, 2, 1, 2, True),
         f32(1, 2, 8, 7)),
    case("max_pool2d_indices", lambda lib, x: _F(lib).max_pool2d(x, 3, 2, 1, return_indices=True),
         f32(2, 2, 6, 5, integral=True)),
    case("max_pool1d", lambda lib, x: _F(lib).max_pool1d(x, 3, 2, 1), f32(2, 3, 8)),
    case("max_pool3d", lambda lib, x: _F(lib).max_pool3d(x, 2, (1, 2, 2)), f32(1, 2, 3, 4, 4)),
    case("avg_pool2d_k2", lambda lib, x: _F(lib).avg_pool2d(x, 2), f32(2, 3, 6, 7)),
    case("avg_pool2d_pad_count_include",
         lambda lib, x: _F(lib).avg_pool2d(x, 3, 2, 1, count_include_pad=True), f32(2, 2, 7, 6)),
    case("avg_pool2d_pad_count_exclude",
         lambda lib, x: _F(lib).avg_pool2d(x, 3, 2, 1, count_include_pad=False), f32(2, 2, 7, 6)),
    case("avg_pool2d_ceil_mode", lambda lib, x: _F(lib).avg_pool2d(x, 3, 2, 1, True),
         f32(1, 2, 6, 8)),
    case("avg_pool2d_divisor_override",
         lambda lib, x: _F(lib).avg_pool2d(x, 2, 1, divisor_override=3), f32(1, 2, 4, 5)),
    case("avg_pool1d", lambda lib, x: _F(lib).avg_pool1d(x, 3, 2, 1), f32(2, 3, 8)),
    case("adaptive_avg_pool2d_divisible", lambda lib, x: _F(lib).adaptive_avg_pool2d(x, (2, 3)),
         f32(2, 3, 6, 9)),
    case("adaptive_avg_pool2d_uneven", lambda lib, x: _F(lib).adaptive_avg_pool2d(x, 3),
         f32(2, 2, 7, 5)),
    case("adaptive_avg_pool2d_none_entry",
         lambda lib, x: _F(lib).adaptive_avg_pool2d(x, (4, None)), f32(1, 2, 7, 5)),
    case("adaptive_avg_pool2d_global", lambda lib, x: _F(lib).adaptive_avg_pool2d(x, 1),
         f32(2, 3, 5, 4)),
    case("adaptive_avg_pool1d_upsample", lambda lib, x: _F(lib).adaptive_avg_pool1d(x, 7),
         f32(2, 3, 5)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", CONV + POOL, ids=lambda c: c.name)
def test_functional_matches_torch(c, backend):
    check_op(c, backend)


def test_case_names_are_unique():
    names = [c.name for c in CONV + POOL]
    assert len(names) == len(set(names))


# ---------------------------------------------------------------------------- layers
def _copy_params(module, ref) -> None:
    with torch.no_grad():
        for (name, p), (tname, tp) in zip(module.named_parameters(), ref.named_parameters()):
            assert name == tname
            tp.copy_(torch.from_numpy(p.detach().numpy().copy()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("args, kwargs", [
    ((3, 4, 3), {"padding": 1, "padding_mode": "reflect"}),
    ((3, 4, (3, 2)), {"padding": (2, 1), "stride": 2, "padding_mode": "replicate", "bias": False}),
    ((4, 4, 3), {"padding": "same", "groups": 2, "padding_mode": "circular"}),
], ids=["reflect", "replicate", "circular"])
def test_conv2d_layer_padding_modes(backend, args, kwargs):
    fg.manual_seed(0)
    layer, ref = Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs)
    _copy_params(layer, ref)
    x = np.random.default_rng(0).standard_normal((2, args[0], 5, 6)).astype(np.float32)
    with using_backend(backend):
        xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out, want = layer(xf), ref(xt)
        np.testing.assert_allclose(out.detach().numpy(), want.detach().numpy(), 1e-5, 1e-5)
        out.sum().backward()
        want.sum().backward()
        np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), 1e-5, 1e-5)
        np.testing.assert_allclose(layer.weight.grad.numpy(), ref.weight.grad.numpy(), 1e-5, 1e-4)


@pytest.mark.parametrize("cls, args, kwargs", [
    (Conv1d, (3, 5, 4), {}),
    (Conv2d, (6, 8, (3, 2)), {"groups": 2}),
    (Conv3d, (2, 4, 3), {"bias": False}),
])
def test_conv_default_init_matches_torch_bounds(cls, args, kwargs):
    """kaiming_uniform_(a=sqrt(5)) weights and U(+-1/sqrt(fan_in)) bias, as torch."""
    fg.manual_seed(0)
    layer = cls(*args, **kwargs)
    ref = getattr(torch.nn, cls.__name__)(*args, **kwargs)
    assert tuple(layer.weight.shape) == tuple(ref.weight.shape)
    fan_in = math.prod(ref.weight.shape[1:])
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    if ref.bias is None:
        assert layer.bias is None
    else:
        b = layer.bias.detach().numpy()
        assert b.shape == tuple(ref.bias.shape) and np.abs(b).max() <= bound


@pytest.mark.parametrize("make", [
    lambda nn_: nn_.Conv2d(3, 64, kernel_size=3),
    lambda nn_: nn_.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2),
    lambda nn_: nn_.Conv2d(4, 8, (3, 2), 2, (1, 0), 2, groups=4, bias=False,
                           padding_mode="circular"),
    lambda nn_: nn_.Conv3d(2, 2, 1, padding="valid"),
    lambda nn_: nn_.Conv2d(2, 2, 3, padding="same"),
    lambda nn_: nn_.MaxPool2d(2),
    lambda nn_: nn_.MaxPool1d(3, 1, 1, 2, ceil_mode=True),
    lambda nn_: nn_.MaxPool3d((1, 2, 2)),
    lambda nn_: nn_.AvgPool2d(3, 2, 1, count_include_pad=False),
    lambda nn_: nn_.AvgPool1d(4, padding=2),
    lambda nn_: nn_.AdaptiveAvgPool2d((None, 3)),
    lambda nn_: nn_.Flatten(),
    lambda nn_: nn_.Flatten(0, 2),
    lambda nn_: nn_.Unflatten(1, (2, -1)),
])
def test_repr_matches_torch(make):
    class Ours:
        def __getattr__(self, name):
            for mod in (conv, pooling, flatten):
                if hasattr(mod, name):
                    return getattr(mod, name)
            raise AttributeError(name)

    assert repr(make(Ours())) == repr(make(torch.nn))


def test_guide_example_shapes_and_values():
    """The guide's block (less BatchNorm2d): Conv2d(3, 64, 3) -> ReLU -> MaxPool2d(2)."""
    fg.manual_seed(0)
    model = nn.Sequential(Conv2d(3, 64, kernel_size=3), nn.ReLU(), MaxPool2d(2))
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 64, kernel_size=3), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2))
    _copy_params(model, ref)
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 11)).astype(np.float32)
    out = model(fg.tensor(x))
    assert tuple(out.shape) == (2, 64, 5, 4)
    np.testing.assert_allclose(out.detach().numpy(), ref(torch.tensor(x)).detach().numpy(), 1e-5,
                               1e-5)


def test_flatten_unflatten_round_trip():
    x = fg.randn(2, 3, 4, 5)
    flat = Flatten()(x)
    assert tuple(flat.shape) == (2, 60)
    assert tuple(Flatten(1, 2)(x).shape) == (2, 12, 5)
    back = Unflatten(1, (3, -1, 5))(flat)
    assert tuple(back.shape) == (2, 3, 4, 5)
    np.testing.assert_array_equal(back.numpy(), x.numpy())


@pytest.mark.numba
def test_small_cnn_trains_like_torch():
    """Conv2d -> ReLU -> MaxPool2d -> Flatten -> Linear with SGD, step by step against torch."""
    fg.manual_seed(0)
    model = nn.Sequential(Conv2d(2, 4, 3, padding=1), nn.ReLU(), MaxPool2d(2), Flatten(),
                          nn.Linear(4 * 3 * 3, 3))
    ref = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 3))
    _copy_params(model, ref)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    with using_backend("numba_cpu"):
        for step in range(4):
            x = rng.standard_normal((4, 2, 6, 7)).astype(np.float32)
            y = rng.integers(0, 3, 4)
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(fg.tensor(x)), fg.tensor(y))
            loss.backward()
            opt.step()
            ref_opt.zero_grad()
            ref_loss = torch.nn.CrossEntropyLoss()(ref(torch.tensor(x)), torch.tensor(y))
            ref_loss.backward()
            ref_opt.step()
            assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5), f"step {step}"
    for p, tp in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.numba
def test_conv_fuses_into_few_kernels():
    """Forward + backward of a padded conv: im2col is one kernel, the input gradient (col2im)
    is one kernel; the rest is the bias/loss epilogue and the output gradient in the GEMMs'
    order."""
    with using_backend("numba_cpu"):
        x = fg.randn(2, 3, 6, 6, requires_grad=True)
        w = fg.randn(4, 3, 3, 3, requires_grad=True)
        b = fg.randn(4, requires_grad=True)
        fg.realize(x, w, b)
        (fgF.conv2d(x, w, b, 1, 1) ** 2).sum().backward()
        fg.realize(x.grad, w.grad, b.grad)
        report = STATS.last_entry.compiled.report
    assert report.extern_count == 3  # the forward product and the two gradient products
    assert report.kernel_count <= 5, report.kernel_count


def test_conv_is_one_gemm_whose_rows_move_into_nchw():
    """The windows are (G, C*K, N*positions), so the forward and both gradients are one GEMM
    each (no per-sample products). Two permutes, the input read as (C, N, H, W) by im2col and
    the product's rows of positions moved into NCHW by the next kernel, are both read through
    (no copy kernel in the forward), and im2col runs one loop segment per tap, each an unmasked
    read along the rows."""
    from fusegrad.ir.graph import toposort
    with using_backend("numba_cpu"):
        x = fg.randn(2, 3, 6, 6, requires_grad=True)
        w = fg.randn(4, 3, 3, 3, requires_grad=True)
        fg.realize(x, w)
        y = fgF.conv2d(x, w, None, 1, 1).relu()
        assert len([n for n in toposort([y.node]) if n.op == "permute"]) == 2
        fg.realize(y)
        forward = STATS.last_entry.compiled.program
        y.sum().backward()
        fg.realize(x.grad, w.grad)
        backward = STATS.last_entry.compiled.program
    sources = [k.source for k in forward.sources]
    assert not [s for s in sources if "def k_copy" in s], sources
    assert len([s for s in sources if "runs as 9 segments" in s]) == 1, sources
    # the backward program also recomputes the forward product (relu's mask needs it)
    for program, gemms in ((forward, 1), (backward, 3)):
        matmuls = [line for line in program.run_source.splitlines()
                   if re.search(r"^\s*(np\.matmul|b?gemm_float32)\(", line)]
        assert len(matmuls) == gemms and all("matmul_1x" in m for m in matmuls), matmuls
    ref_x, ref_w = (torch.tensor(t.detach().numpy(), requires_grad=True) for t in (x, w))
    ref = torch.nn.functional.conv2d(ref_x, ref_w, None, 1, 1).relu()
    ref.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), ref_x.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.numpy(), ref_w.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_windows_trace_one_pad_per_zero_padding():
    """im2col of a padded 3x3 conv is traced as nodes: per tap at most a pad along the window
    axis, a slice and a pad per spatial dim, and the add into the sum; no zero constants (the
    ``cat`` with zeros it once traced made 4 more nodes per padding)."""
    from fusegrad.ir.graph import toposort
    x = fg.randn(2, 5, 5, 3, 1)
    fg.realize(x)
    cols = fgF.sliding_windows(x, 1, (3, 3), (1, 1), (1, 1), (1, 1), (5, 5), 4)
    nodes = toposort([cols.node])
    assert cols.shape == (2, 5, 5, 3, 9)
    assert not [n for n in nodes if n.op == "const"]
    assert len(nodes) <= 1 + 9 * 6, len(nodes)
    ref = np.zeros((2, 7, 7, 3))
    ref[:, 1:6, 1:6] = x.numpy()[..., 0]
    expected = np.stack([ref[:, i:i + 5, j:j + 5] for i in range(3) for j in range(3)], -1)
    np.testing.assert_array_equal(cols.numpy(), expected)


# ---------------------------------------------------------------------------- errors
def _line_of(marker: str) -> int:
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return i
    raise AssertionError(marker)


def _assert_names_line(excinfo, marker: str, *words: str) -> None:
    msg = str(excinfo.value)
    assert f"{HERE}:{_line_of(marker)}" in msg, msg
    for w in words:
        assert w in msg, msg


def test_conv_channel_mismatch():
    layer = Conv2d(3, 8, 3)
    x = fg.ones(1, 4, 5, 5)
    with pytest.raises(ValueError) as e:
        layer(x)  # marker:channels
    _assert_names_line(e, "marker:channels",
                       "Conv2d expected input with 3 channels, got 4 (input shape [1, 4, 5, 5]")


def test_conv_wrong_rank():
    layer = Conv2d(3, 8, 3)
    x = fg.ones(2, 1, 3, 5, 5)
    with pytest.raises(ValueError) as e:
        layer(x)  # marker:rank
    _assert_names_line(e, "marker:rank", "Conv2d", "3-D (unbatched) or 4-D (batched)",
                       "[2, 1, 3, 5, 5]")


def test_conv_kernel_larger_than_padded_input():
    layer = Conv2d(3, 8, 5, padding=1)
    x = fg.ones(1, 3, 2, 6)
    with pytest.raises(ValueError) as e:
        layer(x)  # marker:kernel
    _assert_names_line(e, "marker:kernel", "Conv2d", "kernel size (5 x 5)",
                       "padded input size (4 x 8)")


def test_functional_conv_weight_rank():
    with pytest.raises(ValueError) as e:
        fgF.conv2d(fg.ones(1, 3, 5, 5), fg.ones(8, 3, 3))  # marker:weight
    _assert_names_line(e, "marker:weight", "conv2d", "4-D weight", "[8, 3, 3]")


@pytest.mark.parametrize("make, words", [
    (lambda: Conv2d(3, 8, 3, groups=2), "in_channels (3) must be divisible by groups (2)"),
    (lambda: Conv2d(4, 6, 3, groups=4), "out_channels (6) must be divisible by groups (4)"),
    (lambda: Conv2d(3, 8, 3, stride=2, padding="same"), "not supported for strided"),
    (lambda: Conv2d(3, 8, 3, padding="full"), "invalid padding string 'full'"),
    (lambda: Conv2d(3, 8, 3, padding_mode="mirror"), "padding_mode must be one of"),
    (lambda: Conv2d(3, 8, (3, 3, 3)), "kernel_size must be an int or a tuple of 2 ints"),
])
def test_conv_bad_arguments(make, words):
    with pytest.raises(ValueError, match="Conv2d") as e:
        make()
    assert words in str(e.value)


def test_pool_errors_name_the_layer_and_line():
    x = fg.ones(1, 2, 4, 4)
    with pytest.raises(ValueError) as e:
        MaxPool2d(2, padding=2)(x)  # marker:pad
    _assert_names_line(e, "marker:pad", "MaxPool2d", "at most half of the kernel size")
    with pytest.raises(ValueError) as e:
        AvgPool2d(3)(fg.ones(1, 2, 2, 2))  # marker:small
    _assert_names_line(e, "marker:small", "AvgPool2d", "too small", "[1, 2, 2, 2]")
    with pytest.raises(ValueError) as e:
        MaxPool2d(2)(fg.ones(4, 4))  # marker:poolrank
    _assert_names_line(e, "marker:poolrank", "MaxPool2d", "3-D (unbatched) or 4-D (batched)")
    with pytest.raises(ValueError) as e:
        AdaptiveAvgPool2d((2, 0))(x)  # marker:adaptive
    _assert_names_line(e, "marker:adaptive", "AdaptiveAvgPool2d", "positive")
