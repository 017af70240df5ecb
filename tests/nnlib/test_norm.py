"""Batch, layer and group normalization against PyTorch, on every backend.

The functional forms go through the op-parity helper (the weight and bias are inputs, so their
gradients are checked too). The modules are trained side by side with torch's for a few steps:
outputs, gradients of the input and the parameters, and the running statistics must agree after
every step, and so must the eval-mode output that uses them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import BACKENDS, case, check_op, f32, pos, using_backend

import fusegrad as fg
import fusegrad.nnlib.functional as fgF
from fusegrad.nnlib.modules import normalization as fg_norm


def _F(lib):
    return torch.nn.functional if lib is torch else fgF


def _bn_train(lib, x, w, b):
    return _F(lib).batch_norm(x, None, None, w, b, training=True)


def _bn_eval(lib, x, w, b, mean, var):
    return _F(lib).batch_norm(x, mean.detach(), var.detach(), w, b, training=False, eps=1e-3)


FUNCTIONAL = [
    case("batch_norm_train_2d", _bn_train, f32(5, 3), f32(3), f32(3)),
    case("batch_norm_train_3d", _bn_train, f32(4, 3, 5), f32(3), f32(3)),
    case("batch_norm_train_4d", _bn_train, f32(2, 3, 2, 3), f32(3), f32(3)),
    case("batch_norm_train_no_affine",
         lambda lib, x: _F(lib).batch_norm(x, None, None, training=True, eps=0.1), f32(4, 3, 2)),
    case("batch_norm_eval_2d", _bn_eval, f32(5, 3), f32(3), f32(3), f32(3), pos(3)),
    case("batch_norm_eval_4d", _bn_eval, f32(2, 3, 2, 2), f32(3), f32(3), f32(3), pos(3)),
    case("layer_norm_last", lambda lib, x, w, b: _F(lib).layer_norm(x, (4,), w, b),
         f32(2, 3, 4), f32(4), f32(4)),
    case("layer_norm_last_two", lambda lib, x, w, b: _F(lib).layer_norm(x, [3, 4], w, b, 1e-3),
         f32(2, 3, 4), f32(3, 4), f32(3, 4)),
    case("layer_norm_no_affine", lambda lib, x: _F(lib).layer_norm(x, (5,)), f32(3, 5)),
    case("group_norm", lambda lib, x, w, b: _F(lib).group_norm(x, 2, w, b), f32(2, 4, 3),
         f32(4), f32(4)),
    case("layer_norm_module",
         lambda lib, x: (torch.nn if lib is torch else fg_norm).LayerNorm(4, bias=False)(x * 3),
         f32(2, 3, 4)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", FUNCTIONAL, ids=lambda c: c.name)
def test_functional_matches_torch(c, backend):
    check_op(c, backend)


# ---------------------------------------------------------------------------- modules
def _pair(name: str, *args, **kwargs):
    """The fusegrad module and torch's, with torch's (randomized) values loaded into ours."""
    ref = getattr(torch.nn, name)(*args, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5)
    ours = getattr(fg_norm, name)(*args, **kwargs)
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    return ours, ref


def _close(got, want, what: str) -> None:
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-5, atol=1e-5,
                               err_msg=what)


def _step(ours, ref, x: np.ndarray, seed: int) -> None:
    """One forward/backward in both; compares outputs, gradients and buffers."""
    r = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    fx = fg.tensor(x, requires_grad=True)
    t_out, f_out = ref(tx), ours(fx)
    _close(f_out.detach().numpy(), t_out, "output")
    (t_out * torch.tensor(r)).sum().backward()
    (f_out * fg.tensor(r)).sum().backward()
    _close(fx.grad.numpy(), tx.grad, "input grad")
    for (name, p), tp in zip(ours.named_parameters(), ref.parameters()):
        _close(p.grad.numpy(), tp.grad, f"grad of {name}")
        p.grad, tp.grad = None, None
    for (name, b), tb in zip(ours.named_buffers(), ref.buffers()):
        if name.endswith("num_batches_tracked"):
            assert b.item() == tb.item()
        else:
            _close(b.numpy(), tb, name)


BATCH_NORMS = [
    ("BatchNorm1d", (3,), {}, (6, 3)),
    ("BatchNorm1d", (3,), {"momentum": None}, (4, 3, 5)),
    ("BatchNorm1d", (3,), {"affine": False, "eps": 1e-3}, (5, 3)),
    ("BatchNorm1d", (3,), {"bias": False}, (5, 3)),
    ("BatchNorm2d", (2,), {"momentum": 0.3}, (3, 2, 2, 3)),
    ("BatchNorm2d", (2,), {"track_running_stats": False}, (3, 2, 2, 2)),
    ("BatchNorm3d", (2,), {}, (2, 2, 2, 2, 2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,args,kwargs,shape", BATCH_NORMS,
                         ids=[f"{n}-{k}" for n, _, k, _ in BATCH_NORMS])
def test_batch_norm_trains_like_torch_then_evaluates_with_its_statistics(name, args, kwargs,
                                                                         shape, backend):
    rng = np.random.default_rng(0)
    with using_backend(backend):
        ours, ref = _pair(name, *args, **kwargs)
        for step in range(3):
            x = (rng.standard_normal(shape) * 2 + step).astype(np.float32)
            _step(ours, ref, x, seed=step)
        ours.eval(), ref.eval()
        _step(ours, ref, rng.standard_normal(shape).astype(np.float32), seed=9)
        ours.train(), ref.train()
        _step(ours, ref, rng.standard_normal(shape).astype(np.float32), seed=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_and_group_norm_modules_match_torch(backend):
    rng = np.random.default_rng(1)
    with using_backend(backend):  # all normalize inputs of shape (2, 4, 2, 3)
        for ours, ref in (_pair("LayerNorm", (2, 3)), _pair("LayerNorm", 3, eps=1e-3),
                          _pair("LayerNorm", 3, elementwise_affine=False),
                          _pair("GroupNorm", 2, 4), _pair("GroupNorm", 1, 4, affine=False)):
            _step(ours, ref, rng.standard_normal((2, 4, 2, 3)).astype(np.float32), seed=0)


def test_running_stat_updates_are_lazy_and_computed_with_the_step():
    bn = fg_norm.BatchNorm1d(2)
    fg.realize(*bn.parameters())  # fresh parameters are lazy constants until first realized
    bn(fg.randn(4, 2))
    assert bn.running_mean.node.op != "buffer", "recorded, not computed yet"
    assert bn.num_batches_tracked.item() == 1
    assert bn.running_mean.node.op == "buffer", "realized with everything pending"


@pytest.mark.parametrize("name,args,kwargs", [
    ("BatchNorm1d", (3,), {}), ("BatchNorm2d", (4,), {"momentum": None, "affine": False}),
    ("BatchNorm1d", (3,), {"track_running_stats": False}), ("BatchNorm2d", (2,), {"bias": False}),
    ("LayerNorm", ((2, 3),), {"eps": 1e-3}), ("LayerNorm", (5,), {"elementwise_affine": False}),
    ("LayerNorm", (5,), {"bias": False}), ("GroupNorm", (2, 4), {}),
])
def test_repr_and_state_dict_keys_match_torch(name, args, kwargs):
    ours, ref = getattr(fg_norm, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k].numpy(), v.numpy())
        assert str(ours.state_dict()[k].dtype).split(".")[-1] == str(v.dtype).split(".")[-1]


def test_batch_norm_rejects_wrong_rank():
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        fg_norm.BatchNorm1d(3)(fg.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="expected 4D input"):
        fg_norm.BatchNorm2d(3)(fg.ones(2, 3, 4))


def test_batch_norm_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="3 channels"):
        fg_norm.BatchNorm2d(3)(fg.ones(2, 4, 2, 2))
    with pytest.raises(ValueError, match="running_mean should contain 4"):
        fgF.batch_norm(fg.ones(2, 4), fg.zeros(3), fg.ones(3), training=True)


def test_batch_norm_needs_more_than_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fg_norm.BatchNorm1d(3)(fg.ones(1, 3))
    fg_norm.BatchNorm1d(3).eval()(fg.ones(1, 3))  # eval uses the running statistics


def test_layer_norm_rejects_mismatched_shape():
    with pytest.raises(ValueError, match=r"normalized_shape=\[4\].*\[3, 5\]"):
        fg_norm.LayerNorm(4)(fg.ones(3, 5))


def test_batch_norm_in_double_keeps_an_integer_counter():
    bn = fg_norm.BatchNorm1d(2).double()
    out = bn(fg.randn(3, 2, dtype=fg.float64))
    assert out.dtype == fg.float64 and bn.running_mean.dtype == fg.float64
    assert bn.num_batches_tracked.dtype == fg.int64
