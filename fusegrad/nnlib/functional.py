"""Stateless layer functions and losses (``torch.nn.functional``)."""
from __future__ import annotations

from typing import Any

from ..ir.errors import DTypeError, ShapeError, with_location
from ..tracer import functions as F
from ..tracer.creation import arange
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor

relu = F.relu
sigmoid = F.sigmoid
tanh = F.tanh
softmax = F.softmax
log_softmax = F.log_softmax
one_hot = F.one_hot


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``."""
    if x.shape[-1] != weight.shape[-1]:
        raise ShapeError(with_location(
            f"linear: input has {x.shape[-1]} features (shape {list(x.shape)}) but the weight "
            f"expects {weight.shape[-1]} (weight shape {list(weight.shape)})", user_location()))
    out = F.matmul(x, F.t(weight))
    return out + bias if bias is not None else out


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(loss)
    if reduction == "sum":
        return F.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    loc = user_location()
    F.broadcast_shapes(input.shape, target.shape, op="mse_loss", loc=loc)
    d = input - target
    return _reduce(d * d, reduction)


def _class_mask(target: Tensor, num_classes: int, class_dim: int, ndim: int) -> Tensor:
    """One-hot of ``target`` along ``class_dim`` (float), built from a comparison that fuses."""
    classes = arange(num_classes)
    shape = [1] * ndim
    shape[class_dim] = num_classes
    return F.eq(F.unsqueeze(target, class_dim), F.reshape(classes, shape))


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices ``target`` under log-probabilities ``input``."""
    loc = user_location()
    _check_class_target("nll_loss", input, target, loc)
    num_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    class_dim = 1 if input.ndim > 1 else 0
    _check_target_range(target, num_classes, ignore_index, loc)
    mask = F.to_dtype(_class_mask(target, num_classes, class_dim, input.ndim), input.dtype)
    if weight is not None:
        wshape = [1] * input.ndim
        wshape[class_dim] = num_classes
        mask = mask * F.reshape(weight, wshape)
    keep = F.to_dtype(F.ne(target, ignore_index), input.dtype)
    picked = F.sum(mask * input, class_dim) * keep
    loss = -picked
    if reduction == "mean":
        denom = F.sum(F.sum(mask, class_dim) * keep)
        return F.sum(loss) / denom
    return _reduce(loss, reduction)


def _check_class_target(op: str, input: Tensor, target: Tensor, loc: str | None) -> None:  # noqa: A002
    if target.dtype.is_floating_point:
        raise DTypeError(with_location(
            f"{op}: expected class indices of an integer dtype (int64) for target of shape "
            f"{list(target.shape)}, got {target.dtype}; float targets are class probabilities "
            f"and must have the input's shape {list(input.shape)}", loc))
    expected = (input.shape[0],) + tuple(input.shape[2:]) if input.ndim > 1 else ()
    if tuple(target.shape) != expected:
        raise ShapeError(with_location(
            f"{op}: target shape {list(target.shape)} does not match input shape "
            f"{list(input.shape)} (expected target shape {list(expected)})", loc))


def _check_target_range(target: Tensor, num_classes: int, ignore_index: int,
                        loc: str | None) -> None:
    if target.node.op != "buffer" or target.numel() == 0:
        return
    values = target.node.attrs[0].data
    bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        raise IndexError(with_location(
            f"cross_entropy: Target {int(bad[0])} is out of bounds (number of classes: "
            f"{num_classes})", loc))


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (N, C, ...) with class indices or probabilities."""
    loc = user_location()
    class_dim = 1 if input.ndim > 1 else 0
    num_classes = input.shape[class_dim]
    logp = F.log_softmax(input, class_dim)
    if target.dtype.is_floating_point and tuple(target.shape) == tuple(input.shape):
        probs = target
        if label_smoothing:
            probs = probs * (1 - label_smoothing) + label_smoothing / num_classes
        per = logp * probs
        if weight is not None:
            wshape = [1] * input.ndim
            wshape[class_dim] = num_classes
            per = per * F.reshape(weight, wshape)
        return _reduce(-F.sum(per, class_dim), reduction)
    _check_class_target("cross_entropy", input, target, loc)
    loss = nll_loss(logp, target, weight, ignore_index, reduction)
    if not label_smoothing:
        return loss
    # smoothing term: the mean over classes of -logp (weighted), with the same reduction
    wshape = [1] * input.ndim
    wshape[class_dim] = num_classes
    per = logp if weight is None else logp * F.reshape(weight, wshape)
    keep = F.to_dtype(F.ne(target, ignore_index), input.dtype)
    smooth = -F.sum(per, class_dim) * keep / num_classes
    if reduction == "mean":
        if weight is None:
            denom = F.sum(keep)
        else:
            mask = F.to_dtype(_class_mask(target, num_classes, class_dim, input.ndim), input.dtype)
            denom = F.sum(F.sum(mask * F.reshape(weight, wshape), class_dim) * keep)
        smooth = F.sum(smooth) / denom
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * label_smoothing


