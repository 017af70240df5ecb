"""Embedding, MultiheadAttention and scaled_dot_product_attention against torch.

Modules start from torch's initialized parameters (copied through ``load_state_dict``); outputs,
attention weights and the gradients of every input and parameter are compared.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
from fusegrad.ir.errors import DTypeError, ShapeError
from fusegrad.nnlib import functional_seq as FS
from fusegrad.nnlib.modules.attention import MultiheadAttention
from fusegrad.nnlib.modules.sparse import Embedding

RTOL = ATOL = 1e-5


def _copy(ref: torch.nn.Module, ours) -> None:
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in ref.state_dict().items()})


def _close(what: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


def _backprop_and_compare(th_out, fg_out, th_leaves, fg_leaves, seed: int = 0) -> None:
    """Compare outputs, then the gradients of ``sum(out * r)`` on every leaf (by name)."""
    rng = np.random.default_rng(seed)
    th_loss, fg_loss = 0, 0
    for i, (got, want) in enumerate(zip(fg_out, th_out)):
        if want is None:
            assert got is None, f"output {i}: torch gives None"
            continue
        _close(f"output {i}", got.detach().numpy(), want.detach().numpy())
        r = rng.standard_normal(tuple(want.shape)).astype(np.float32)
        th_loss = th_loss + (want * torch.tensor(r)).sum()
        fg_loss = fg_loss + (got * fg.tensor(r)).sum()
    th_loss.backward()
    fg_loss.backward()
    for name, want in th_leaves.items():
        got = fg_leaves[name]
        if want.grad is None:
            assert got.grad is None or not np.any(got.grad.numpy()), name
            continue
        _close(f"grad of {name}", got.grad.numpy(), want.grad.numpy())


# ---------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_with_padding_idx_matches_torch(backend):
    torch.manual_seed(0)
    ref = torch.nn.Embedding(6, 3, padding_idx=2)
    ours = Embedding(6, 3, padding_idx=2)
    _copy(ref, ours)
    with torch.no_grad():
        ref.weight[2] = 0.5  # a non-zero padding row is still read, but gets no gradient
    ours.load_state_dict({"weight": ref.weight.detach().numpy().copy()})
    idx = np.array([[0, 2, 5], [2, 1, 1]], dtype=np.int64)
    with using_backend(backend):
        th_out, fg_out = ref(torch.tensor(idx)), ours(fg.tensor(idx))
        assert tuple(fg_out.shape) == (2, 3, 3)
        _backprop_and_compare([th_out], [fg_out], {"weight": ref.weight},
                              {"weight": ours.weight})
        assert not np.any(ours.weight.grad.numpy()[2])
        assert np.any(ours.weight.grad.numpy()[1])


def test_embedding_init_and_negative_padding_idx():
    fg.manual_seed(0)
    layer = Embedding(200, 8, padding_idx=-1)
    assert layer.padding_idx == 199
    w = layer.weight.detach().numpy()
    assert not np.any(w[199])
    assert abs(w[:199].mean()) < 0.05 and abs(w[:199].std() - 1) < 0.05  # N(0, 1)
    assert repr(layer) == "Embedding(200, 8, padding_idx=199)"


def test_embedding_from_pretrained():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    frozen = Embedding.from_pretrained(fg.tensor(table))
    assert not frozen.weight.requires_grad
    np.testing.assert_array_equal(frozen(fg.tensor([3, 0])).numpy(), table[[3, 0]])
    trainable = Embedding.from_pretrained(fg.tensor(table), freeze=False, padding_idx=0)
    np.testing.assert_array_equal(trainable.weight.detach().numpy(), table)  # row 0 kept
    trainable(fg.tensor([0, 1, 1])).sum().backward()
    np.testing.assert_array_equal(trainable.weight.grad.numpy()[:2], [[0, 0, 0], [2, 2, 2]])
    with pytest.raises(ShapeError, match="embeddings must be a 2-D Tensor"):
        Embedding.from_pretrained(fg.zeros(3))


def test_embedding_errors_name_layer_and_line():
    layer = Embedding(10, 4)
    with pytest.raises(IndexError) as info:
        layer(fg.tensor([[1, 10]]))
    msg = str(info.value)
    assert "Embedding: index 10 is out of range for num_embeddings=10" in msg
    assert "test_attention_embedding.py:" in msg
    with pytest.raises(IndexError, match="index -1 is out of range"):
        layer(fg.tensor([-1]))
    with pytest.raises(DTypeError, match="Embedding: indices must be int64 or int32, got float32"):
        layer(fg.zeros(2))
    with pytest.raises(ValueError, match="padding_idx must be within num_embeddings"):
        Embedding(10, 4, padding_idx=10)


def test_functional_embedding():
    w = fg.tensor(np.eye(3, dtype=np.float32), requires_grad=True)
    out = FS.embedding(fg.tensor([2, 2, 0]), w, padding_idx=0)
    np.testing.assert_array_equal(out.detach().numpy(), np.eye(3)[[2, 2, 0]])
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy().sum(1), [0, 0, 6])


# ---------------------------------------------------------------------------- MultiheadAttention
E, HEADS, L, S, N = 8, 2, 3, 4, 2


def _causal_bool(length: int, source: int) -> np.ndarray:
    return np.triu(np.ones((length, source), dtype=bool), 1)  # True = may not attend


def _masks(name: str, length: int, source: int) -> dict:
    """Keyword masks (numpy) for one case; every query keeps at least one key."""
    kpm = np.zeros((N, source), dtype=bool)
    kpm[0, -2:] = kpm[1, -1] = True  # padding at the end: True = ignore this key
    causal = _causal_bool(length, source)
    if name == "none":
        return {}
    if name == "key_padding_bool":
        return {"key_padding_mask": kpm}
    if name == "key_padding_float":
        return {"key_padding_mask": np.where(kpm, -1e9, 0.0).astype(np.float32)}
    if name == "causal_bool":
        return {"attn_mask": causal, "is_causal": True}
    if name == "causal_float":
        return {"attn_mask": np.where(causal, -math.inf, 0.0).astype(np.float32)}
    if name == "causal_and_padding":
        return {"attn_mask": causal, "key_padding_mask": kpm}
    if name == "mask_3d_float":
        rng = np.random.default_rng(9)
        return {"attn_mask": rng.standard_normal((N * HEADS, length, source)).astype(np.float32)}
    raise KeyError(name)


def _mha_case(backend: str, batch_first: bool = False, masks: str = "none",
              need_weights: bool = True, average: bool = True, kind: str = "self",
              batched: bool = True, **module_kwargs) -> None:
    kdim = module_kwargs.get("kdim") or E
    vdim = module_kwargs.get("vdim") or E
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(E, HEADS, batch_first=batch_first, **module_kwargs)
    ours = MultiheadAttention(E, HEADS, batch_first=batch_first, **module_kwargs)
    _copy(ref, ours)
    ref.train()
    ours.train()  # dropout=0: training mode must still match
    rng = np.random.default_rng(1)

    def shape(length: int, features: int) -> tuple:
        if not batched:
            return (length, features)
        return (N, length, features) if batch_first else (length, N, features)

    length = L if kind != "self" else S
    q = rng.standard_normal(shape(length, E)).astype(np.float32)
    k = rng.standard_normal(shape(S, kdim)).astype(np.float32)
    v = rng.standard_normal(shape(S, vdim)).astype(np.float32)
    arrays = {"query": q} if kind == "self" else \
        {"query": q, "key": k} if kind == "kv_shared" else {"query": q, "key": k, "value": v}
    th_leaves = {n: torch.tensor(a, requires_grad=True) for n, a in arrays.items()}
    extra = _masks(masks, length, S)
    if not batched and "key_padding_mask" in extra:
        extra["key_padding_mask"] = extra["key_padding_mask"][0]
    with using_backend(backend):
        fg_leaves = {n: fg.tensor(a, requires_grad=True) for n, a in arrays.items()}

        def call(module, leaves, lib):
            qq = leaves["query"]
            kk = leaves.get("key", qq)
            vv = leaves.get("value", kk)
            kw = {n: (lib.tensor(m) if isinstance(m, np.ndarray) else m)
                  for n, m in extra.items()}
            return module(qq, kk, vv, need_weights=need_weights, average_attn_weights=average,
                          **kw)

        th_out, fg_out = call(ref, th_leaves, torch), call(ours, fg_leaves, fg)
        for got, want in zip(fg_out, th_out):
            assert (got is None) == (want is None)
            if want is not None:
                assert tuple(got.shape) == tuple(want.shape)
        th_leaves.update(dict(ref.named_parameters()))
        fg_leaves.update(dict(ours.named_parameters()))
        _backprop_and_compare(list(th_out), list(fg_out), th_leaves, fg_leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("masks", ["none", "key_padding_bool", "causal_bool", "causal_float",
                                   "causal_and_padding"])
def test_mha_self_attention_masks(masks, batch_first, backend):
    _mha_case(backend, batch_first, masks)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need_weights,average", [(True, False), (False, True)],
                         ids=["per_head_weights", "no_weights"])
def test_mha_weights_options(need_weights, average, backend):
    _mha_case(backend, True, "causal_and_padding", need_weights, average)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,kwargs", [
    ("kv_shared", {}),
    ("separate", {}),
    ("separate", {"kdim": 5, "vdim": 3}),
    ("separate", {"kdim": 5, "vdim": 3, "bias": False}),
    ("kv_shared", {"add_bias_kv": True, "add_zero_attn": True}),
], ids=["kv_shared", "qkv_separate", "kdim_vdim", "kdim_vdim_nobias", "bias_kv_zero_attn"])
def test_mha_cross_attention(kind, kwargs, backend):
    _mha_case(backend, False, "key_padding_float", kind=kind, **kwargs)


@pytest.mark.parametrize("masks", ["mask_3d_float", "key_padding_float", "causal_bool"])
def test_mha_more_masks_interpreter(masks):
    _mha_case("interpreter", True, masks, kind="separate")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_unbatched(need_weights, backend):
    _mha_case(backend, True, "key_padding_bool", need_weights, kind="separate", batched=False)


def test_mha_parameters_match_torch():
    for kwargs in ({}, {"kdim": 5, "vdim": 3}, {"bias": False, "add_bias_kv": True}):
        ref = torch.nn.MultiheadAttention(E, HEADS, **kwargs)
        ours = MultiheadAttention(E, HEADS, **kwargs)
        assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
            [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert repr(ours) == repr(ref)
    fg.manual_seed(0)
    ours = MultiheadAttention(64, 4)
    w = ours.in_proj_weight.detach().numpy()
    bound = math.sqrt(6 / (64 + 192))  # xavier_uniform_ of (3E, E)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not np.any(ours.in_proj_bias.detach().numpy())
    assert not np.any(ours.out_proj.bias.detach().numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_mha_dropout_in_train_mode(backend):
    fg.manual_seed(0)
    layer = MultiheadAttention(E, HEADS, dropout=0.5, batch_first=True)
    x = fg.tensor(np.random.default_rng(2).standard_normal((N, L, E)).astype(np.float32))
    with using_backend(backend):
        fg.manual_seed(5)
        out_a, w_a = layer(x, x, x)
        fg.manual_seed(5)
        out_b, _ = layer(x, x, x)
        layer.eval()
        _, w_eval = layer(x, x, x)
        np.testing.assert_array_equal(out_a.detach().numpy(), out_b.detach().numpy())
        assert tuple(w_a.shape) == (N, L, L)
        assert not np.allclose(w_a.detach().numpy(), w_eval.detach().numpy())
        np.testing.assert_allclose(w_eval.detach().numpy().sum(-1), 1, rtol=1e-5)


def test_mha_errors_name_layer_and_line():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 3"):
        MultiheadAttention(10, 3)
    layer = MultiheadAttention(E, HEADS)
    x = fg.zeros(L, N, E)
    with pytest.raises(ShapeError) as info:
        layer(fg.zeros(L, N, 6), x, x)
    assert "MultiheadAttention: query has 6 features" in str(info.value)
    assert "test_attention_embedding.py:" in str(info.value)
    with pytest.raises(ShapeError, match="query must have 3 dimensions"):
        layer(fg.zeros(1, L, N, E), x, x)
    with pytest.raises(ShapeError, match=r"2-D attn_mask must have shape \[3, 3\]"):
        layer(x, x, x, attn_mask=fg.zeros(3, 4))
    with pytest.raises(ShapeError, match=r"key_padding_mask must have shape \[2, 3\]"):
        layer(x, x, x, key_padding_mask=fg.zeros(2, 4))
    with pytest.raises(ValueError, match="is_causal=True is a hint"):
        layer(x, x, x, is_causal=True)
    with pytest.raises(DTypeError, match="only bool and floating types of attn_mask"):
        layer(x, x, x, attn_mask=fg.zeros(3, 3, dtype=fg.int64))


# ---------------------------------------------------------------------------- functional
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
def test_scaled_dot_product_attention_matches_torch(mask, backend):
    rng = np.random.default_rng(3)
    arrays = {"q": rng.standard_normal((2, 2, 3, 4)), "k": rng.standard_normal((2, 2, 5, 4)),
              "v": rng.standard_normal((2, 2, 5, 6))}
    arrays = {n: a.astype(np.float32) for n, a in arrays.items()}
    kw: dict = {}
    if mask == "bool":
        kw["attn_mask"] = np.tril(np.ones((3, 5), dtype=bool))  # True = may attend (SDPA)
    elif mask == "float":
        kw["attn_mask"] = rng.standard_normal((2, 1, 3, 5)).astype(np.float32)
    elif mask == "causal":
        kw["is_causal"] = True
    th_leaves = {n: torch.tensor(a, requires_grad=True) for n, a in arrays.items()}
    with using_backend(backend):
        fg_leaves = {n: fg.tensor(a, requires_grad=True) for n, a in arrays.items()}
        th_out = torch.nn.functional.scaled_dot_product_attention(
            *th_leaves.values(), scale=0.3,
            **{n: torch.tensor(m) if isinstance(m, np.ndarray) else m for n, m in kw.items()})
        fg_out = FS.scaled_dot_product_attention(
            *fg_leaves.values(), scale=0.3,
            **{n: fg.tensor(m) if isinstance(m, np.ndarray) else m for n, m in kw.items()})
        _backprop_and_compare([th_out], [fg_out], th_leaves, fg_leaves)


def test_scaled_dot_product_attention_gqa_and_default_scale():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s).astype(np.float32)
               for s in ((1, 4, 3, 2), (1, 2, 5, 2), (1, 2, 5, 3)))
    want = torch.nn.functional.scaled_dot_product_attention(
        torch.tensor(q), torch.tensor(k), torch.tensor(v), enable_gqa=True)
    got = FS.scaled_dot_product_attention(fg.tensor(q), fg.tensor(k), fg.tensor(v),
                                          enable_gqa=True)
    _close("gqa", got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="attn_mask should not be set when is_causal"):
        FS.scaled_dot_product_attention(fg.tensor(q), fg.tensor(q), fg.tensor(q),
                                        attn_mask=fg.zeros(3, 3), is_causal=True)


def test_multi_head_attention_forward_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(E, HEADS)
    rng = np.random.default_rng(5)
    q, k = (rng.standard_normal((n, N, E)).astype(np.float32) for n in (L, S))
    kpm = np.array([[False, True, False, False], [False, False, False, True]])

    def args(m: dict) -> tuple:
        return (E, HEADS, m["in_proj_weight"], m["in_proj_bias"], None, None, False, 0.0,
                m["out_proj.weight"], m["out_proj.bias"])

    th_params = dict(ref.named_parameters())
    fg_params = {n: fg.tensor(p.detach().numpy()) for n, p in th_params.items()}
    want = torch.nn.functional.multi_head_attention_forward(
        torch.tensor(q), torch.tensor(k), torch.tensor(k), *args(th_params),
        key_padding_mask=torch.tensor(kpm), average_attn_weights=False)
    got = FS.multi_head_attention_forward(
        fg.tensor(q), fg.tensor(k), fg.tensor(k), *args(fg_params),
        key_padding_mask=fg.tensor(kpm), average_attn_weights=False)
    for g, w in zip(got, want):
        _close("mha_forward", g.detach().numpy(), w.detach().numpy())
