"""``nll_loss`` and ``cross_entropy`` build their class-index loss as nodes
(tracer/nll.py): the graph must be the one the same loss written with Tensor ops
builds. The oracle below is the Tensor-level code the losses ran before; the graphs are compared
by structural key (the oracle makes a new class table per call, the nodes share one).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nnlib.functional as fgF
from fusegrad.ir.graph import toposort
from fusegrad.ir.key import structural_key
from fusegrad.ir.macro import expand_macros
from fusegrad.tracer import functions as F
from fusegrad.tracer.creation import buffer_tensor


def _class_mask(target, num_classes, class_dim, ndim):
    classes = buffer_tensor(np.arange(num_classes, dtype=np.int64))
    shape = [1] * ndim
    shape[class_dim] = num_classes
    return F.eq(F.unsqueeze(target, class_dim), F.reshape(classes, shape))


def _weighted_mean(total, denom):
    empty = F.eq(denom, 0.0)
    return F.where(empty, float("nan"), total / F.where(empty, 1.0, denom))


def oracle_nll(input, target, weight=None, ignore_index=-100, reduction="mean"):
    class_dim = 1 if input.ndim > 1 else 0
    num_classes = input.shape[class_dim]
    w = None
    if weight is not None:
        shape = [1] * input.ndim
        shape[class_dim] = num_classes
        w = F.reshape(weight, shape)
    mask = _class_mask(target, num_classes, class_dim, input.ndim)
    picked = F.where(mask, input, 0.0) if w is None else F.where(mask, input * w, 0.0)
    keep = F.to_dtype(F.ne(target, ignore_index), input.dtype)
    loss = -F.sum(picked, class_dim) * keep
    if reduction == "mean":
        if w is None:
            denom = F.sum(keep)
        else:
            denom = F.sum(F.sum(F.where(mask, w, 0.0), class_dim) * keep)
        return _weighted_mean(F.sum(loss), denom)
    return {"sum": F.sum, "none": lambda t: t}[reduction](loss)


def _same(new, old) -> None:
    """The same graph once the loss's macro node (``ir/macro.py``) is expanded."""
    assert any(n.op == "macro" for n in toposort([new.node]))
    assert structural_key(expand_macros([new.node]))[0] == structural_key([old.node])[0]
    assert new.requires_grad == old.requires_grad


SHAPES = [(5,), (4, 5), (3, 5, 2)]       # (C), (N, C), (N, C, d1)


@pytest.mark.parametrize("shape,reduction,weighted,target_dtype",
                         list(itertools.product(SHAPES, ["mean", "sum", "none"], [False, True],
                                                ["int64", "int32"])))
def test_nll_loss_builds_the_graph_of_its_tensor_ops(shape, reduction, weighted, target_dtype):
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = fg.tensor(rng.integers(0, shape[-1] if len(shape) == 1 else shape[1],
                                    target_shape).astype(target_dtype))
    weight = fg.tensor(rng.uniform(0.5, 2, shape[1 if len(shape) > 1 else 0])
                       .astype(np.float32)) if weighted else None
    logp = F.log_softmax(x, 1 if len(shape) > 1 else 0)
    new = fgF.nll_loss(logp, target, weight, ignore_index=2, reduction=reduction)
    _same(new, oracle_nll(logp, target, weight, ignore_index=2, reduction=reduction))
    new = fgF.cross_entropy(x, target, weight, ignore_index=2, reduction=reduction)
    _same(new, oracle_nll(logp, target, weight, ignore_index=2, reduction=reduction))


def test_a_float64_weight_promotes_as_the_tensor_ops_did():
    x = fg.tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    target = fg.tensor(np.array([0, 3, 1]))
    weight = fg.tensor(np.ones(4))
    for reduction in ("mean", "none"):
        new = fgF.nll_loss(x, target, weight, reduction=reduction)
        _same(new, oracle_nll(x, target, weight, reduction=reduction))
        assert new.dtype == fg.float64


def test_every_target_ignored_gives_nan_with_a_zero_gradient():
    x = fg.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    loss = fgF.cross_entropy(x, fg.tensor(np.array([-100, -100])))
    loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3), np.float32))
