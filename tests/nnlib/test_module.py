"""``nnlib.Module``'s API against ``torch.nn.Module``'s, on one nested model built in both.

The model is written once (``_build(lib, nn)``) and built from torch.nn and from fusegrad's
classes; names, order, printing, state dicts, modes, dtypes and errors must all agree.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
import fusegrad.nnlib as fg_nnlib
from fusegrad.nnlib.modules import activation, dropout, normalization

FG_NN = SimpleNamespace(**{k: v for m in (fg_nnlib, activation, dropout, normalization)
                           for k, v in vars(m).items() if isinstance(v, type)})


def _build(lib, nn):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)
            self.register_buffer("scale", lib.ones(3) * 2)
            self.register_buffer("scratch", lib.zeros(1), persistent=False)
            self.act = nn.LeakyReLU(0.1)

        def forward(self, x):
            return self.act(self.bn(self.fc(x))) * self.scale

    return nn.Sequential(
        Block(),
        nn.Dropout(0.0),
        nn.ModuleList([nn.Linear(3, 3), nn.Tanh()]),
        nn.ModuleDict({"head": nn.Linear(3, 2), "norm": nn.LayerNorm(2)}),
    )


def _forward(model, x):
    block, drop, mlist, mdict = list(model.children())
    h = mlist[1](mlist[0](drop(block(x))))
    return mdict["norm"](mdict["head"](h))


def _pair():
    torch.manual_seed(0)
    ref = _build(torch, torch.nn)
    ours = _build(fg, FG_NN)
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    return ours, ref


def test_names_and_order_match_torch():
    ours, ref = _pair()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in ref.named_children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in ref.modules()]
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert len(list(ours.buffers())) == len(list(ref.buffers()))
    assert [n for n, _ in ours[0].named_parameters(prefix="blk", recurse=False)] == \
        [n for n, _ in ref[0].named_parameters(prefix="blk", recurse=False)]


def test_repr_matches_torch():
    ours, ref = _pair()
    assert str(ours) == str(ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loaded_model_computes_like_torch_in_train_and_eval(backend):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with using_backend(backend):
        ours, ref = _pair()
        for training in (True, False, True):
            ours.train(training), ref.train(training)
            np.testing.assert_allclose(_forward(ours, fg.tensor(x)).detach().numpy(),
                                       _forward(ref, torch.tensor(x)).detach().numpy(),
                                       rtol=1e-5, atol=1e-5)
        for (name, b), tb in zip(ours.state_dict().items(), ref.state_dict().values()):
            np.testing.assert_allclose(b.numpy(), tb.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)


def test_state_dict_values_are_detached_unless_keep_vars():
    ours, ref = _pair()
    sd = ours.state_dict()
    assert not any(v.requires_grad for v in sd.values())
    kept = ours.state_dict(keep_vars=True)
    assert kept["0.fc.weight"] is ours[0].fc.weight
    assert "0.scratch" not in sd and any(b is ours[0].scratch for b in ours.buffers())
    assert list(ours.state_dict(prefix="model.")) == list(ref.state_dict(prefix="model."))


def _error_lines(text: str) -> list[str]:
    """The error's lines without our source location, with Size spelled as torch's."""
    return [line for line in text.replace("fusegrad.Size", "torch.Size").split("\n")
            if not line.startswith("  at ")]


def test_load_state_dict_errors_list_every_problem_like_torch():
    ours, ref = _pair()
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    del sd["0.bn.running_var"]
    sd["extra.weight"] = np.zeros(2, dtype=np.float32)
    sd["3.head.bias"] = np.zeros(5, dtype=np.float32)
    with pytest.raises(RuntimeError) as want:
        ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    with pytest.raises(RuntimeError) as got:
        ours.load_state_dict(sd)
    assert _error_lines(str(got.value)) == _error_lines(str(want.value))
    del sd["3.head.bias"]
    got_keys = ours.load_state_dict(sd, strict=False)
    want_keys = ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    assert got_keys.missing_keys == want_keys.missing_keys == ["0.bn.running_var",
                                                               "3.head.bias"]
    assert got_keys.unexpected_keys == want_keys.unexpected_keys == ["extra.weight"]
    assert repr(ours.load_state_dict(ours.state_dict())) == "<All keys matched successfully>"


def test_load_state_dict_copies_into_the_same_tensors_keeping_dtype():
    ours, _ = _pair()
    weight = ours[0].fc.weight
    source = np.arange(12, dtype=np.float64).reshape(3, 4)
    ours[0].fc.load_state_dict({"weight": source, "bias": np.zeros(3)})
    assert ours[0].fc.weight is weight and weight.dtype == fg.float32 and weight.requires_grad
    source[0, 0] = 100.0
    np.testing.assert_array_equal(weight.detach().numpy(), np.arange(12).reshape(3, 4))
    with pytest.raises(TypeError, match="dict-like"):
        ours.load_state_dict([("0.fc.weight", source)])


def test_shared_modules_like_torch():
    def build(nn):
        shared = nn.Linear(2, 2)
        return nn.Sequential(shared, nn.ReLU(), shared)
    ours, ref = build(FG_NN), build(torch.nn)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert len(list(ours.parameters())) == len(list(ref.parameters())) == 2
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert [n for n, _ in ours.named_modules(remove_duplicate=False)] == \
        [n for n, _ in ref.named_modules(remove_duplicate=False)]
    assert [n for n, _ in ours.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in ref.named_parameters(remove_duplicate=False)]


def _registration_errors(lib, nn) -> list[str]:
    m = nn.Linear(2, 2)
    calls = [
        lambda: m.register_buffer("a.b", lib.zeros(1)),
        lambda: m.register_buffer("", lib.zeros(1)),
        lambda: m.register_buffer(3, lib.zeros(1)),
        lambda: m.register_buffer("weight", lib.zeros(1)),
        lambda: m.register_buffer("buf", [1.0]),
        lambda: m.register_parameter("bias", lib.zeros(2)),
        lambda: m.register_parameter("in_features", None),
        lambda: m.add_module("x.y", nn.ReLU()),
        lambda: m.add_module("weight", nn.ReLU()),
        lambda: m.add_module("ok", 3),
        lambda: setattr(m, "weight", lib.zeros(2, 2)),
    ]
    out = []
    for call in calls:
        try:
            call()
            out.append("no error")
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            out.append(type(e).__name__)
    return out


def test_registration_errors_match_torch():
    assert _registration_errors(fg, FG_NN) == _registration_errors(torch, torch.nn)


def test_register_parameter_buffer_and_module_then_delete():
    m = FG_NN.Module()
    m.register_parameter("w", FG_NN.Parameter(fg.ones(2)))
    m.register_buffer("b", fg.zeros(2), persistent=False)
    m.add_module("child", FG_NN.ReLU())
    assert list(m.state_dict()) == ["w"]
    m.b = fg.ones(2)                      # assigning to a buffer name replaces the buffer
    assert [n for n, _ in m.named_buffers()] == ["b"] and m.b.numpy().sum() == 2
    m.register_buffer("b", fg.ones(2))    # now persistent
    assert list(m.state_dict()) == ["w", "b"]
    del m.w, m.b, m.child
    assert list(m.state_dict()) == [] and list(m.children()) == []
    assert m.get_submodule("") is m


def test_get_submodule_parameter_and_buffer():
    ours, _ = _pair()
    assert ours.get_submodule("0.bn") is ours[0].bn
    assert ours.get_parameter("3.head.weight") is ours[3]["head"].weight
    assert ours.get_buffer("0.bn.running_mean") is ours[0].bn.running_mean
    with pytest.raises(AttributeError, match="has no attribute `nope`"):
        ours.get_submodule("0.nope")
    with pytest.raises(AttributeError, match="has no parameter `nope`"):
        ours.get_parameter("0.fc.nope")


def test_apply_visits_children_first_like_torch():
    ours, ref = _pair()
    seen_ours, seen_ref = [], []
    ours.apply(lambda m: seen_ours.append(type(m).__name__))
    ref.apply(lambda m: seen_ref.append(type(m).__name__))
    assert seen_ours == seen_ref


def test_train_and_eval_reach_every_module_through_train():
    calls = []

    class Recording(FG_NN.ReLU):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)

    model = FG_NN.Sequential(FG_NN.Sequential(Recording()), FG_NN.Linear(2, 2))
    assert model.eval() is model
    assert not any(m.training for m in model.modules()) and calls == [False]
    model.train()
    assert all(m.training for m in model.modules()) and calls == [False, True]
    with pytest.raises(ValueError, match="boolean"):
        model.train("yes")


def test_requires_grad_and_zero_grad():
    ours, _ = _pair()
    x = fg.randn(3, 4)
    _forward(ours, x).sum().backward()
    assert all(p.grad is not None for p in ours.parameters())
    ours.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in ours.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())
    assert ours.requires_grad_(False) is ours
    assert not any(p.requires_grad for p in ours.parameters())
    assert not _forward(ours, x).requires_grad


def test_dtype_and_device_moves_keep_identity():
    ours, ref = _pair()
    weight = ours[0].fc.weight
    assert ours.double() is ours and weight.dtype == fg.float64 and ours[0].fc.weight is weight
    ref.double()
    assert [str(v.dtype).split(".")[-1] for v in ours.state_dict().values()] == \
        [str(v.dtype).split(".")[-1] for v in ref.state_dict().values()]
    assert ours.float() is ours and weight.dtype == fg.float32
    assert ours.to(fg.float64) is ours and weight.dtype == fg.float64
    ours.to(fg.zeros(1, dtype=fg.float32))
    assert weight.dtype == fg.float32 and weight.requires_grad and weight.is_leaf
    assert ours.to("cpu") is ours and ours.cpu() is ours and ours.to(device="cpu") is ours
    assert ours[0].bn.num_batches_tracked.dtype == fg.int64
    with pytest.raises(TypeError, match="floating point"):
        ours.to(fg.int64)
    if not fg.cuda.is_available():  # tests/cuda/ covers the move where CUDA runs
        with pytest.raises(RuntimeError, match="CUDA"):
            ours.to("cuda")
    out = _forward(ours.double(), fg.randn(3, 4, dtype=fg.float64))
    assert out.dtype == fg.float64


def test_deepcopy_is_independent():
    ours, _ = _pair()
    ours.eval()
    clone = copy.deepcopy(ours)
    x = fg.randn(2, 4)
    np.testing.assert_array_equal(_forward(clone, x).detach().numpy(),
                                  _forward(ours, x).detach().numpy())
    fg_nnlib.init.zeros_(clone[0].fc.weight)
    assert ours[0].fc.weight.detach().numpy().any()
    assert clone[0].fc.weight.requires_grad


def test_missing_forward_and_attribute_errors():
    with pytest.raises(NotImplementedError, match="forward"):
        FG_NN.Module()(1)
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'nope'"):
        _ = FG_NN.Linear(2, 2).nope


@pytest.mark.parametrize("lib", [fg, torch], ids=["fusegrad", "torch"])
def test_load_state_dict_into_tied_weights_keeps_the_new_value(lib):
    """A language model's head tied to a padded embedding: its state dict holds the one tensor
    under both names, and loading a new value under the first name must not be undone by the
    (aliasing) stale entry under the second."""
    class Tied(lib.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = lib.nn.Embedding(5, 3, padding_idx=0)
            self.head = lib.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    state = model.state_dict()
    assert list(state) == ["embed.weight", "head.weight"]
    new = np.arange(15, dtype=np.float32).reshape(5, 3)
    state["embed.weight"] = lib.tensor(new)
    model.load_state_dict(state)
    assert model.head.weight is model.embed.weight
    np.testing.assert_array_equal(model.head.weight.detach().numpy(), new)
