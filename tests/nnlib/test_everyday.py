"""The everyday nn API of issue 12 against torch: F.pad, F.interpolate, F.normalize,
F.cosine_similarity, the Transformer layers (torch's weights loaded by name), forward hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import BACKENDS, boolean, case, f32, parity_tests, using_backend

import fusegrad as fg
import fusegrad.nn as nn
import fusegrad.nn.functional as F


def _F(lib):
    return torch.nn.functional if lib is torch else F


FUNCTIONAL = [
    case("pad_constant", lambda lib, x: _F(lib).pad(x, (1, 2)), f32(2, 3)),
    case("pad_constant_value_3_dims", lambda lib, x: _F(lib).pad(x, (1, 0, 0, 2, 1, 1), value=-1.5),
         f32(2, 3, 2)),
    case("pad_negative_crops", lambda lib, x: _F(lib).pad(x, (-1, 2, 1, -2)), f32(2, 4, 5)),
    case("pad_reflect", lambda lib, x: _F(lib).pad(x, (2, 1), mode="reflect"), f32(2, 3, 4)),
    case("pad_reflect_2d", lambda lib, x: _F(lib).pad(x, (1, 1, 2, 0), mode="reflect"),
         f32(1, 2, 3, 4)),
    case("pad_replicate", lambda lib, x: _F(lib).pad(x, (2, 1, 1, 1), mode="replicate"),
         f32(1, 2, 3, 3)),
    case("pad_circular", lambda lib, x: _F(lib).pad(x, (1, 2), mode="circular"), f32(2, 2, 4)),
    case("interpolate_nearest_scale", lambda lib, x: _F(lib).interpolate(x, scale_factor=2),
         f32(1, 2, 2, 3)),
    case("interpolate_nearest_size", lambda lib, x: _F(lib).interpolate(x, size=(3, 5)),
         f32(1, 2, 4, 3)),
    case("interpolate_nearest_exact_1d", lambda lib, x: _F(lib).interpolate(
        x, size=7, mode="nearest-exact"), f32(2, 1, 3)),
    case("interpolate_bilinear", lambda lib, x: _F(lib).interpolate(
        x, size=(5, 4), mode="bilinear", align_corners=False), f32(1, 2, 3, 3)),
    case("interpolate_bilinear_corners", lambda lib, x: _F(lib).interpolate(
        x, scale_factor=1.5, mode="bilinear", align_corners=True), f32(2, 1, 3, 4)),
    case("interpolate_bilinear_down", lambda lib, x: _F(lib).interpolate(
        x, scale_factor=0.5, mode="bilinear"), f32(1, 1, 4, 6)),
    case("interpolate_linear", lambda lib, x: _F(lib).interpolate(x, size=6, mode="linear"),
         f32(1, 2, 4)),
    case("normalize", lambda lib, x: _F(lib).normalize(x), f32(3, 4)),
    case("normalize_p1_dim", lambda lib, x: _F(lib).normalize(x, p=1.0, dim=-1), f32(2, 3, 4)),
    case("normalize_zero_row", lambda lib, x: _F(lib).normalize(
        x * lib.tensor([[1.0], [0.0], [1.0]])), f32(3, 4)),
    case("cosine_similarity", lambda lib, a, b: _F(lib).cosine_similarity(a, b), f32(3, 4),
         f32(3, 4)),
    case("cosine_similarity_broadcast_dim", lambda lib, a, b: _F(lib).cosine_similarity(
        a, b, dim=-1), f32(2, 3, 4), f32(3, 4)),
    case("one_hot_masked_fill", lambda lib, x, m: _F(lib).one_hot(
        lib.tensor([0, 2, 1]), 3).masked_fill(m, 5) * x, f32(3, 3), boolean(3, 3)),
]


test_functional_names_are_unique, test_functional_matches_torch, \
    test_functional_numba_cpu_equals_interpreter = parity_tests(FUNCTIONAL)


def test_functional_errors():
    x = fg.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="divisible by 2"):
        F.pad(x, (1,))
    with pytest.raises(ValueError, match="smaller than the input size"):
        F.pad(x, (2, 2), mode="reflect")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(NotImplementedError, match="bilinear mode needs 4D"):
        F.interpolate(fg.ones(1, 1, 2), size=3, mode="bilinear")
    with pytest.raises(ValueError, match="either size or scale_factor"):
        F.interpolate(x)


# ---------------------------------------------------------------------------- transformers
def _copy(ref: torch.nn.Module, ours: nn.Module) -> None:
    result = ours.load_state_dict({k: v.detach().numpy().copy()
                                   for k, v in ref.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys


def _compare(th_mod, fg_mod, th_args, fg_args, kwargs_for, rtol=2e-5, atol=2e-5) -> None:
    """Outputs in eval mode, then gradients of ``sum(out * r)`` for every parameter and every
    float input."""
    th_mod.eval()
    fg_mod.eval()
    th_out = th_mod(*th_args, **kwargs_for(torch))
    fg_out = fg_mod(*fg_args, **kwargs_for(fg))
    np.testing.assert_allclose(fg_out.detach().numpy(), th_out.detach().numpy(), rtol=rtol,
                               atol=atol)
    r = np.random.default_rng(0).standard_normal(tuple(th_out.shape)).astype(np.float32)
    (th_out * torch.tensor(r)).sum().backward()
    (fg_out * fg.tensor(r)).sum().backward()
    fg_params = dict(fg_mod.named_parameters())
    for name, p in th_mod.named_parameters():
        np.testing.assert_allclose(fg_params[name].grad.numpy(), p.grad.numpy(), rtol=rtol,
                                   atol=atol, err_msg=name)
    for got, want in zip(fg_args, th_args):
        np.testing.assert_allclose(got.grad.numpy(), want.grad.numpy(), rtol=rtol, atol=atol)


def _inputs(*shapes: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return ([torch.tensor(a, requires_grad=True) for a in arrays],
            [fg.tensor(a, requires_grad=True) for a in arrays])


def _masks(lib, length: int, batch: int, causal: bool, padding: bool) -> dict:
    kw = {}
    if causal:
        kw["src_mask"] = lib.triu(lib.ones(length, length, dtype=lib.bool), 1)
        kw["is_causal"] = True
    if padding:
        kw["src_key_padding_mask"] = lib.tensor([[False] * (length - 1) + [True]] * batch)
    return kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first,norm_first,activation,causal,padding", [
    (False, False, "relu", False, False),
    (True, True, "gelu", True, True),
    (True, False, "gelu", False, True),
])
def test_encoder_layer_matches_torch(backend, batch_first, norm_first, activation, causal,
                                     padding):
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.1, activation=activation, batch_first=batch_first,
              norm_first=norm_first)
    ref = torch.nn.TransformerEncoderLayer(8, 2, **kw)
    ours = nn.TransformerEncoderLayer(8, 2, **kw)
    _copy(ref, ours)
    length, batch = 4, 2
    shape = (batch, length, 8) if batch_first else (length, batch, 8)
    th_x, fg_x = _inputs(shape)
    with using_backend(backend):
        _compare(ref, ours, th_x, fg_x, lambda lib: _masks(lib, length, batch, causal, padding))


def test_encoder_stack_with_norm_and_module_activation():
    torch.manual_seed(1)
    layer_kw = dict(dim_feedforward=12, batch_first=True)
    ref = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 4, activation=torch.nn.GELU(), **layer_kw), 2,
        norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 4, activation=nn.GELU(),
                                                            **layer_kw), 2, norm=nn.LayerNorm(8))
    assert list(ours.state_dict()) == list(ref.state_dict())
    _copy(ref, ours)
    th_x, fg_x = _inputs((2, 3, 8), seed=1)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(3)
    np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(3).numpy(),
                                  mask.numpy())
    _compare(ref, ours, th_x, fg_x, lambda lib: {
        "mask": (mask if lib is torch else nn.Transformer.generate_square_subsequent_mask(3))})


def test_decoder_layer_and_transformer_match_torch():
    torch.manual_seed(2)
    kw = dict(dim_feedforward=16, norm_first=True)
    ref = torch.nn.TransformerDecoderLayer(8, 2, **kw)
    ours = nn.TransformerDecoderLayer(8, 2, **kw)
    _copy(ref, ours)
    th_in, fg_in = _inputs((3, 2, 8), (5, 2, 8), seed=2)
    _compare(ref, ours, th_in, fg_in, lambda lib: {
        "tgt_mask": lib.triu(lib.ones(3, 3, dtype=lib.bool), 1), "tgt_is_causal": True,
        "memory_key_padding_mask": lib.tensor([[False] * 4 + [True]] * 2)})

    ref = torch.nn.Transformer(8, 2, 1, 2, 12, batch_first=True)
    ours = nn.Transformer(8, 2, 1, 2, 12, batch_first=True)
    _copy(ref, ours)
    th_in, fg_in = _inputs((2, 5, 8), (2, 3, 8), seed=3)
    _compare(ref, ours, th_in, fg_in, lambda lib: {})


def test_transformer_trains_with_dropout():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5)
    x = fg.randn(3, 2, 8)
    a, b = layer(x), layer(x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())  # fresh masks per call
    a.sum().backward()
    assert layer.linear1.weight.grad is not None
    layer.eval()
    with fg.inference_mode():
        np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())


# ---------------------------------------------------------------------------- hooks
def test_forward_hooks_change_inputs_and_outputs_and_remove():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Identity())
    calls = []
    pre = model[0].register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    post = model[0].register_forward_hook(lambda m, args, out: out + 1)
    model[1].register_forward_hook(lambda m, args, out: calls.append(("relu", out.shape)))
    model[1].register_forward_hook(lambda m, args, out: calls.append("first"), prepend=True)
    x = fg.ones(4, 2)
    bias = model[0].bias.detach().numpy()
    np.testing.assert_allclose(model(x).detach().numpy(),
                               np.maximum(bias + 1, 0)[None].repeat(4, 0), rtol=1e-6)
    assert calls == ["first", ("relu", fg.Size([4, 3]))]
    pre.remove()
    post.remove()
    np.testing.assert_allclose(model[0](x).detach().numpy(),
                               (x @ model[0].weight.T + model[0].bias).detach().numpy())


def test_hooks_with_kwargs_handle_context_and_apply():
    lin = nn.Linear(2, 2)
    seen = {}

    def pre(module, args, kwargs):
        seen["pre"] = kwargs
        return args, kwargs

    def post(module, args, kwargs, out):
        seen["post"] = out.shape

    with lin.register_forward_pre_hook(pre, with_kwargs=True), \
            lin.register_forward_hook(post, with_kwargs=True):
        lin(fg.ones(1, 2))
    assert seen == {"pre": {}, "post": fg.Size([1, 2])}
    assert not lin._forward_hooks and not lin._forward_pre_hooks

    names = []
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Tanh()))
    model.apply(lambda m: names.append(type(m).__name__))
    assert names == ["Linear", "Tanh", "Sequential", "Sequential"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "1.0"]
