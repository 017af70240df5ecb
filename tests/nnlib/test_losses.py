"""Every loss, in every reduction mode and option, against PyTorch on every backend.

Each case calls the loss *module* (``lib`` picks torch.nn or fusegrad's), so the module's
argument handling is covered with the functional form behind it. Class weights and targets that
torch cannot differentiate are made inside the case, so only differentiable inputs carry grads.
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from parity import BACKENDS, case, check_op, f32, i64

import fusegrad as fg
import fusegrad.nnlib.functional as fgF
from fusegrad.nnlib.modules import loss as fg_loss

FG_NN = SimpleNamespace(**{k: v for k, v in vars(fg_loss).items() if isinstance(v, type)})
REDUCTIONS = ["mean", "sum", "none"]


def _nn(lib):
    return torch.nn if lib is torch else FG_NN


def _probs(lib, shape, low=0.05, high=0.95):
    """Fixed probabilities strictly inside (0, 1), as a tensor of ``lib``."""
    values = np.random.default_rng(7).uniform(low, high, shape).astype(np.float32)
    return lib.tensor(values)


def _pointwise_cases() -> list:
    out = []
    for red in REDUCTIONS:
        out += [
            case(f"mse_{red}", lambda lib, x, y, r=red: _nn(lib).MSELoss(reduction=r)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"l1_{red}", lambda lib, x, y, r=red: _nn(lib).L1Loss(reduction=r)(x, y),
                 f32(3, 4, integral=True), f32(3, 4, integral=True)),
            case(f"smooth_l1_{red}",
                 lambda lib, x, y, r=red: _nn(lib).SmoothL1Loss(reduction=r)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"smooth_l1_beta_{red}",
                 lambda lib, x, y, r=red: _nn(lib).SmoothL1Loss(reduction=r, beta=0.5)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"smooth_l1_beta0_{red}",
                 lambda lib, x, y, r=red: _nn(lib).SmoothL1Loss(reduction=r, beta=0.0)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"huber_{red}", lambda lib, x, y, r=red: _nn(lib).HuberLoss(reduction=r)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"huber_delta_{red}",
                 lambda lib, x, y, r=red: _nn(lib).HuberLoss(reduction=r, delta=0.3)(x, y),
                 f32(3, 4), f32(3, 4)),
            case(f"bce_{red}",
                 lambda lib, y, r=red: _nn(lib).BCELoss(reduction=r)(_probs(lib, (3, 4)), y),
                 f32(3, 4, low=0, high=1)),
            case(f"bce_input_grad_{red}",
                 lambda lib, x, r=red: _nn(lib).BCELoss(reduction=r)(
                     lib.sigmoid(x), _probs(lib, (3, 4), 0, 1)), f32(3, 4)),
            case(f"bce_weight_{red}",
                 lambda lib, x, y, r=red: _nn(lib).BCELoss(lib.tensor([1.0, 2.0, 0.5, 0.0]),
                                                           reduction=r)(lib.sigmoid(x), y),
                 f32(3, 4), f32(3, 4, low=0, high=1)),
            case(f"bce_logits_{red}",
                 lambda lib, x, y, r=red: _nn(lib).BCEWithLogitsLoss(reduction=r)(x, y),
                 f32(3, 4, low=-30, high=30), f32(3, 4, low=0, high=1)),
            case(f"bce_logits_weights_{red}",
                 lambda lib, x, y, r=red: _nn(lib).BCEWithLogitsLoss(
                     lib.tensor([[1.0], [0.5], [2.0]]), reduction=r,
                     pos_weight=lib.tensor([0.5, 1.0, 3.0, 2.0]))(x, y),
                 f32(3, 4, low=-5, high=5), f32(3, 4, low=0, high=1)),
        ]
    out += [
        case("mse_broadcast", lambda lib, x, y: _nn(lib).MSELoss()(x, y),
             f32(3, 4), f32(4)),
        # forward only: at x = 0 or 1 torch's target gradient is -logit(x) = +-inf, ours +-100
        case("bce_clamps_log_at_minus_100",
             lambda lib, y: _nn(lib).BCELoss(reduction="none")(
                 lib.tensor([[0.0, 1.0, 0.0, 1.0, 0.5]]), y.detach()),
             f32(1, 5, low=0, high=1)),
        case("bce_logits_pos_weight_only",
             lambda lib, x, y: _nn(lib).BCEWithLogitsLoss(pos_weight=lib.tensor([3.0]))(x, y),
             f32(2, 5, integral=True), f32(2, 5, low=0, high=1)),
        case("l1_float64", lambda lib, x, y: _nn(lib).L1Loss()(x.double(), y.double()),
             f32(3, 4), f32(3, 4)),
    ]
    return out


def _ce(lib, logits, target, weight, ignore, smoothing, reduction, nll=False):
    w = lib.tensor([0.5, 2.0, 1.0]) if weight else None
    kwargs = {"reduction": reduction}
    if ignore:
        kwargs["ignore_index"] = 1
    if nll:
        return _nn(lib).NLLLoss(w, **kwargs)(lib.log_softmax(logits, 1), target)
    return _nn(lib).CrossEntropyLoss(w, label_smoothing=smoothing, **kwargs)(logits, target)


def _class_cases() -> list:
    out = []
    # class indices: every combination of weight, ignore_index, smoothing and reduction
    for weight, ignore, smoothing, red in itertools.product((False, True), (False, True),
                                                            (0.0, 0.2), REDUCTIONS):
        name = f"ce_index_w{int(weight)}_ig{int(ignore)}_ls{smoothing}_{red}"
        out.append(case(name, lambda lib, x, t, a=(weight, ignore, smoothing, red):
                        _ce(lib, x, t, *a), f32(5, 3), i64(5, low=0, high=3)))
    # class probabilities (ignore_index does not apply)
    for weight, smoothing, red in itertools.product((False, True), (0.0, 0.2), REDUCTIONS):
        name = f"ce_probs_w{int(weight)}_ls{smoothing}_{red}"
        out.append(case(name, lambda lib, x, p, a=(weight, smoothing, red):
                        _ce(lib, x, lib.softmax(p, 1), a[0], False, a[1], a[2]),
                        f32(4, 3), f32(4, 3)))
    for weight, ignore, red in itertools.product((False, True), (False, True), REDUCTIONS):
        name = f"nll_w{int(weight)}_ig{int(ignore)}_{red}"
        out.append(case(name, lambda lib, x, t, a=(weight, ignore, red):
                        _ce(lib, x, t, a[0], a[1], 0.0, a[2], nll=True),
                        f32(5, 3), i64(5, low=0, high=3)))
    out += [
        case("ce_index_kdim", lambda lib, x, t: _ce(lib, x, t, True, True, 0.1, "mean"),
             f32(2, 3, 2, 2), i64(2, 2, 2, low=0, high=3)),
        case("ce_index_kdim_none", lambda lib, x, t: _ce(lib, x, t, False, False, 0.0, "none"),
             f32(2, 3, 4), i64(2, 4, low=0, high=3)),
        case("ce_probs_kdim", lambda lib, x, p: _ce(lib, x, lib.softmax(p, 1), True, False,
                                                      0.3, "mean"),
             f32(2, 3, 4), f32(2, 3, 4)),
        case("ce_unbatched", lambda lib, x: _nn(lib).CrossEntropyLoss(label_smoothing=0.1)(
            x, lib.tensor(2)), f32(3)),
        case("nll_unbatched", lambda lib, x: _nn(lib).NLLLoss()(x, lib.tensor(1)), f32(3)),
        case("nll_kdim_weight", lambda lib, x, t: _ce(lib, x, t, True, False, 0.0, "sum",
                                                        nll=True),
             f32(2, 3, 4), i64(2, 4, low=0, high=3)),
        case("nll_with_minus_inf_elsewhere",
             lambda lib, x: _nn(lib).NLLLoss()(lib.log(lib.tensor([[0.0, 0.5, 0.5]])) + x,
                                               lib.tensor([1])), f32(1, 3)),
        case("ce_all_ignored_mean_is_nan",
             lambda lib, x: _nn(lib).CrossEntropyLoss(ignore_index=0)(x, lib.tensor([0, 0])),
             f32(2, 3)),
        case("ce_legacy_size_average",
             lambda lib, x, t: _nn(lib).CrossEntropyLoss(size_average=False)(x, t),
             f32(4, 3), i64(4, low=0, high=3)),
        case("ce_large_logits", lambda lib, x, t: _nn(lib).CrossEntropyLoss()(x * 1000, t),
             f32(4, 3), i64(4, low=0, high=3)),
    ]
    return out


CASES = _pointwise_cases() + _class_cases()


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.filterwarnings("ignore:size_average and reduce", "ignore:Using a target size")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_loss_matches_torch(c, backend):
    check_op(c, backend)


def test_ce_target_out_of_range_is_an_index_error():
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        FG_NN.CrossEntropyLoss()(fg.randn(2, 3), fg.tensor([0, 3]))
    with pytest.raises(IndexError, match="Target -1 is out of bounds"):
        FG_NN.NLLLoss()(fg.randn(2, 3), fg.tensor([-1, 0]))
    FG_NN.CrossEntropyLoss(ignore_index=-1)(fg.randn(2, 3), fg.tensor([-1, 0]))  # ignored: fine


def test_ce_target_shape_must_match():
    with pytest.raises(ValueError, match=r"target shape \[3\].*\[2, 3\]"):
        FG_NN.CrossEntropyLoss()(fg.randn(2, 3), fg.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="class probabilities"):
        FG_NN.CrossEntropyLoss()(fg.randn(2, 3), fg.rand(2, 4))


def test_class_weight_needs_one_entry_per_class():
    with pytest.raises(ValueError, match="all 3 classes"):
        FG_NN.CrossEntropyLoss(fg.ones(2))(fg.randn(2, 3), fg.tensor([0, 1]))


def test_bce_shape_mismatch_and_range():
    with pytest.raises(ValueError, match="target size"):
        FG_NN.BCELoss()(fg.rand(3, 1), fg.rand(3))
    with pytest.raises(ValueError, match="target size"):
        FG_NN.BCEWithLogitsLoss()(fg.randn(3, 1), fg.rand(3))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        FG_NN.BCELoss()(fg.tensor([0.5, 1.5]), fg.tensor([0.0, 1.0]))


def test_pointwise_losses_broadcast_with_torchs_warning_or_fail_clearly():
    with pytest.warns(UserWarning, match="different to the input size"):
        FG_NN.L1Loss()(fg.ones(3, 4), fg.ones(4))
    with pytest.raises(ValueError, match=r"\[3, 4\] and \[5\]"):
        FG_NN.MSELoss()(fg.ones(3, 4), fg.ones(5))


def test_legacy_reduction_flags_warn_like_torch():
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert FG_NN.MSELoss(size_average=False).reduction == "sum"
    with pytest.warns(UserWarning):
        assert FG_NN.L1Loss(reduce=False).reduction == "none"


def test_invalid_reduction_and_parameters():
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        FG_NN.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        fgF.l1_loss(fg.ones(2), fg.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fgF.cross_entropy(fg.ones(2, 3), fg.tensor([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta"):
        fgF.huber_loss(fg.ones(2), fg.ones(2), delta=0.0)


def test_weights_are_buffers_like_torchs():
    w = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    for name in ("CrossEntropyLoss", "NLLLoss", "BCELoss"):
        ours = getattr(FG_NN, name)(fg.tensor(w))
        ref = getattr(torch.nn, name)(torch.tensor(w))
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert repr(ours) == repr(ref)
    ours = FG_NN.BCEWithLogitsLoss(pos_weight=fg.tensor(w))
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.double().pos_weight.dtype == fg.float64
