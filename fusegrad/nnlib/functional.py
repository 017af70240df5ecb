"""Stateless layer functions and losses (``torch.nn.functional``), composed from Tensor ops.

Everything here is built from the public Tensor API, so forward and backward fuse with the
surrounding computation. Where a textbook formula would overflow or lose precision (softplus,
binary cross-entropy with logits, erf), a stable form is used and the unselected branch of every
``where`` is fed a clamped input, so that its gradient cannot turn into ``inf * 0 = nan``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError, with_location
from ..tracer import functions as F
from ..tracer import nll as NLL
from ..tracer.creation import buffer_tensor, uniform_node_tensor
from ..tracer.functions_ext import erf
from ..tracer.functions_ext import log1p as _log1p
from ..tracer.grad_mode import no_grad
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor
from ..tracer.value_checks import check_values, in_range_test

sigmoid = F.sigmoid
tanh = F.tanh
one_hot = F.one_hot


def _maybe_inplace(x: Tensor, out: Tensor, inplace: bool) -> Tensor:
    """``out``, or ``x`` overwritten with it (the in-place variants of the activations)."""
    return x.copy_(out) if inplace else out


# ---------------------------------------------------------------------------- special functions
def _log1p_exp(z: Tensor) -> Tensor:
    """log(1 + e^z) without overflow; its gradient is sigmoid(z) everywhere, 1/2 at 0."""
    pos = F.lt(0.0, z)
    return F.where(pos, z, 0.0) + _log1p(F.exp(F.where(pos, -z, z)))


# ---------------------------------------------------------------------------- activations
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return _maybe_inplace(input, F.relu(input), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return hardtanh(input, 0.0, 6.0, inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    return _maybe_inplace(input, F.clamp(input, min_val, max_val), inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> Tensor:
    """``x`` where x > 0, else ``negative_slope * x`` (the gradient at 0 is the slope, as torch)."""
    out = F.where(F.lt(0.0, input), input, input * negative_slope)
    return _maybe_inplace(input, out, inplace)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where x > 0, else ``alpha * (exp(x) - 1)``."""
    neg = F.clamp(input, max=0.0)        # exp never sees the positive side
    out = F.where(F.lt(0.0, input), input, (F.exp(neg) - 1.0) * alpha)
    return _maybe_inplace(input, out, inplace)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return _maybe_inplace(input, elu(input, alpha) * scale, inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """``x * Phi(x)``; ``approximate='tanh'`` uses torch's tanh formula instead of erf."""
    if approximate == "none":
        return input * 0.5 * (erf(input * 0.7071067811865476) + 1.0)
    if approximate == "tanh":
        # 0.5 (1 + tanh(u)) = sigmoid(2u): the same function without 1 + tanh's cancellation
        inner = (input + input * input * input * 0.044715) * (2 * math.sqrt(2 / math.pi))
        return input * F.sigmoid(inner)
    raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return _maybe_inplace(input, input * F.sigmoid(input), inplace)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    return _maybe_inplace(input, input * F.tanh(softplus(input)), inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold``."""
    z = input * beta
    linear = F.lt(threshold, z)
    soft = _log1p_exp(F.where(linear, 0.0, z))
    return F.where(linear, input, soft / beta if beta != 1 else soft)


def _softmax_dim(name: str, ndim: int) -> int:
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    if dim is None:
        dim = _softmax_dim("softmax", input.ndim)
    return F.softmax(input, dim, dtype)


def log_softmax(input: Tensor, dim: int | None = None, dtype: Any = None
                ) -> Tensor:
    if dim is None:
        dim = _softmax_dim("log_softmax", input.ndim)
    return F.log_softmax(input, dim, dtype)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``."""
    loc = user_location()
    if x.shape[-1] != weight.shape[-1]:
        raise ShapeError(with_location(
            f"linear: input has {x.shape[-1]} features (shape {list(x.shape)}) but the weight "
            f"expects {weight.shape[-1]} (weight shape {list(weight.shape)})", loc))
    F.check_same_dtype("linear", (("input", x), ("weight", weight), ("bias", bias)), loc,
                       F.MODEL_DTYPE_HINT)
    if x.ndim >= 1 and weight.ndim == 2 and (bias is None or bias.ndim == 1):
        return F.affine(x, weight, bias, loc)
    out = F.matmul(x, F.t(weight))
    return out + bias if bias is not None else out


# ---------------------------------------------------------------------------- dropout
def _check_p(p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _masked(input: Tensor, mask_shape: tuple[int, ...], p: float,
            inplace: bool) -> Tensor:
    """``input`` times a keep-mask of ``mask_shape`` (broadcast) scaled by 1/(1-p)."""
    if p == 1.0:
        out = input * 0.0
    else:
        # the counter-based rand node: reproducible under manual_seed, drawn inside the program
        keep = F.le(p, uniform_node_tensor(mask_shape, input.dtype.name))
        out = input * (F.to_dtype(keep, input.dtype) * (1.0 / (1.0 - p)))
    return _maybe_inplace(input, out, inplace)


def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``."""
    _check_p(p)
    if not training or p == 0.0:
        return input
    return _masked(input, tuple(input.shape), p, inplace)


def _feature_dropout(name: str, input: Tensor, p: float, training: bool,
                     inplace: bool, batched: bool) -> Tensor:
    """Zero whole channels: one draw per (sample, channel), or per channel without a batch."""
    _check_p(p)
    if not training or p == 0.0:
        return input
    if input.ndim < 2:
        raise ShapeError(with_location(
            f"{name}: feature dropout needs at least 2 dims (channels and a feature dim), got "
            f"input of shape {list(input.shape)}", user_location()))
    lead = 2 if batched else 1
    mask_shape = tuple(input.shape[:lead]) + (1,) * (input.ndim - lead)
    return _masked(input, mask_shape, p, inplace)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    if input.ndim not in (2, 3):
        raise RuntimeError(with_location(
            f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note "
            "that dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
            "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
            "inputs).", user_location()))
    return _feature_dropout("dropout1d", input, p, training, inplace, input.ndim == 3)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W); a 3-D input is read as (N, C, L), as torch does."""
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is "
                      "deprecated and will result in an error in a future release. To retain "
                      "the behavior and silence this warning, please use dropout instead.",
                      stacklevel=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-"
                      "wise 1D dropout behavior is desired - input is interpreted as shape "
                      "(N, C, L), where C is the channel dim (as torch does). To maintain the 1D "
                      "channel-wise dropout behavior, please switch to using dropout1d instead.",
                      stacklevel=2)
    return _feature_dropout("dropout2d", input, p, training, inplace, True)


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    if input.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {input.ndim}-D input to dropout3d, which is "
                      "deprecated and will result in an error in a future release.", stacklevel=2)
    return _feature_dropout("dropout3d", input, p, training, inplace, input.ndim != 4)


# ---------------------------------------------------------------------------- normalization
def _channel_vector(op: str, name: str, t: Tensor | None, channels: int,
                    loc: str | None) -> None:
    if t is not None and t.numel() != channels:
        raise ShapeError(with_location(
            f"{op}: {name} should contain {channels} elements (one per channel) not {t.numel()} "
            f"(shape {list(t.shape)})", loc))


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float | Tensor = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Normalize each channel (dim 1) of ``input`` by batch or running statistics.

    In training, the batch mean and biased variance normalize the input, and the running
    statistics (if given) move toward the batch mean and the *unbiased* variance, in place and
    without gradient. ``momentum`` may be a 0-d tensor (the cumulative average's 1/n).
    """
    loc = user_location()
    if input.ndim < 2:
        raise ShapeError(with_location(
            f"batch_norm: expected an input with a channel dim (N, C, ...), got shape "
            f"{list(input.shape)}", loc))
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _channel_vector("batch_norm", name, t, channels, loc)
    F.check_same_dtype("batch_norm", (("input", input), ("weight", weight), ("bias", bias),
                                      ("running_mean", running_mean),
                                      ("running_var", running_var)), loc, F.MODEL_DTYPE_HINT)
    shape = (1, channels) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // channels
        if count <= 1:
            raise ValueError(with_location(
                f"Expected more than 1 value per channel when training, got input size "
                f"{list(input.shape)}", loc))
        dims = (0,) + tuple(range(2, input.ndim))
        mean = F.mean(input, dims, keepdim=True)
        centered = input - mean
        var = F.mean(centered * centered, dims, keepdim=True)
        with no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(F.reshape(mean, (channels,)) * momentum)
            if running_var is not None:
                unbiased = F.reshape(var, (channels,)) * (count / (count - 1))
                running_var.mul_(1 - momentum).add_(unbiased * momentum)
        out = centered * F.rsqrt(var + eps)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError(with_location(
                "batch_norm: running_mean and running_var must be defined in evaluation mode",
                loc))
        out = (input - F.reshape(running_mean, shape)) * F.rsqrt(F.reshape(running_var, shape)
                                                                  + eps)
    if weight is not None:
        out = out * F.reshape(weight, shape)
    if bias is not None:
        out = out + F.reshape(bias, shape)
    return out


def _normalized_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def layer_norm(input: Tensor, normalized_shape: int | Sequence[int],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims (biased variance, as torch)."""
    shape = _normalized_shape(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ShapeError(with_location(
            f"layer_norm: Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size {list(input.shape)}",
            user_location()))
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ShapeError(with_location(
                f"layer_norm: {name} of shape {list(t.shape)} does not match normalized_shape "
                f"{list(shape)}", user_location()))
    F.check_same_dtype("layer_norm", (("input", input), ("weight", weight), ("bias", bias)),
                       user_location(), F.MODEL_DTYPE_HINT)
    dims = tuple(range(input.ndim - k, input.ndim))
    mean = F.mean(input, dims, keepdim=True)
    centered = input - mean
    var = F.mean(centered * centered, dims, keepdim=True)
    out = centered * F.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize each group of ``C / num_groups`` channels over its channels and positions."""
    loc = user_location()
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise ShapeError(with_location(
            f"group_norm: expected an input (N, C, ...) with C divisible by num_groups="
            f"{num_groups}, got shape {list(input.shape)}", loc))
    F.check_same_dtype("group_norm", (("input", input), ("weight", weight), ("bias", bias)), loc,
                       F.MODEL_DTYPE_HINT)
    n, c = input.shape[0], input.shape[1]
    grouped = F.reshape(input, (n, num_groups, -1))
    mean = F.mean(grouped, 2, keepdim=True)
    centered = grouped - mean
    var = F.mean(centered * centered, 2, keepdim=True)
    out = F.reshape(centered * F.rsqrt(var + eps), tuple(input.shape))
    shape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * F.reshape(weight, shape)
    if bias is not None:
        out = out + F.reshape(bias, shape)
    return out


# ---------------------------------------------------------------------------- losses
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(loss)
    if reduction == "sum":
        return F.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _pointwise_pair(op: str, input: Tensor, target: Tensor) -> None:
    """Broadcast like torch (with its warning when the shapes differ), or fail naming both."""
    F.broadcast_shapes(input.shape, target.shape, op=op, loc=user_location())
    if tuple(input.shape) != tuple(target.shape):
        warnings.warn(f"Using a target size ({list(target.shape)}) that is different to the "
                      f"input size ({list(input.shape)}). This will likely lead to incorrect "
                      "results due to broadcasting. Please ensure they have the same size.",
                      stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    _pointwise_pair("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    _pointwise_pair("l1_loss", input, target)
    return _reduce(F.abs(input - target), reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - beta/2`` (beta=0: L1)."""
    _check_reduction(reduction)
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    _pointwise_pair("smooth_l1_loss", input, target)
    d = input - target
    a = F.abs(d)
    if beta == 0.0:
        return _reduce(a, reduction)
    return _reduce(F.where(F.lt(a, beta), d * d * (0.5 / beta), a - 0.5 * beta), reduction)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean",
               delta: float = 1.0) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - delta/2)``."""
    _check_reduction(reduction)
    if delta <= 0:
        raise ValueError("huber_loss does not support non-positive values for delta.")
    _pointwise_pair("huber_loss", input, target)
    d = input - target
    a = F.abs(d)
    return _reduce(F.where(F.lt(a, delta), d * d * 0.5, (a - 0.5 * delta) * delta), reduction)


def _same_shape(op: str, input: Tensor, target: Tensor) -> None:
    if tuple(input.shape) != tuple(target.shape):
        raise ShapeError(with_location(
            f"{op}: Using a target size ({list(target.shape)}) that is different to the input "
            f"size ({list(input.shape)}) is not supported. Please ensure they have the same size.",
            user_location()))


def _check_probabilities(input: Tensor) -> None:
    """torch rejects inputs outside [0, 1] (nan included) with a RuntimeError; a pending input
    is computed for the check (see ``tracer.value_checks``)."""
    loc = user_location()

    def check(values: np.ndarray) -> None:
        if not ((values >= 0) & (values <= 1)).all():
            raise RuntimeError(with_location(
                "binary_cross_entropy: all elements of input should be between 0 and 1", loc))
    check_values(input, check)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    """``-(y log x + (1-y) log(1-x))`` with each log clamped to >= -100, as torch does."""
    _check_reduction(reduction)
    _same_shape("binary_cross_entropy", input, target)
    _check_probabilities(input)
    log_x = F.clamp(F.log(input), min=-100.0)
    log_1mx = F.clamp(F.log(1.0 - input), min=-100.0)
    loss = -(target * log_x + (1.0 - target) * log_1mx)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """``-(p y log s(x) + (1-y) log(1-s(x)))`` as ``(1-y) x + (1 + (p-1) y) softplus(-x)``."""
    _check_reduction(reduction)
    _same_shape("binary_cross_entropy_with_logits", input, target)
    softplus_neg = _log1p_exp(-input)   # -log sigmoid(x), stable for any x
    if pos_weight is not None:
        F.broadcast_shapes(pos_weight.shape, input.shape, op="binary_cross_entropy_with_logits",
                           loc=user_location())
        loss = (1.0 - target) * input + ((pos_weight - 1.0) * target + 1.0) * softplus_neg
    else:
        loss = (1.0 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def _class_mask(target: Tensor, num_classes: int, class_dim: int, ndim: int,
                loc: str | None) -> Tensor:
    """One-hot of ``target`` along ``class_dim`` (bool), built from a comparison that fuses."""
    return NLL.one_hot_mask(target, num_classes, class_dim, ndim, loc)


def _check_class_weight(op: str, weight: Tensor | None, num_classes: int,
                        loc: str | None) -> None:
    """``weight`` (if any) must have one entry per class."""
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != num_classes):
        raise ShapeError(with_location(
            f"{op}: weight tensor should be defined either for all {num_classes} classes or no "
            f"classes but got weight tensor of shape: {list(weight.shape)}", loc))


def _class_weight(op: str, weight: Tensor | None, num_classes: int, class_dim: int, ndim: int,
                  loc: str | None) -> Tensor | None:
    """``weight`` reshaped to broadcast along ``class_dim``; it must have one entry per class."""
    _check_class_weight(op, weight, num_classes, loc)
    if weight is None:
        return None
    shape = [1] * ndim
    shape[class_dim] = num_classes
    return F.reshape(weight, shape)


def _weighted_mean(total: Tensor, denom: Tensor, loc: str | None) -> Tensor:
    """``total / denom``: nan when every target is ignored, yet a zero gradient then (torch's)."""
    return NLL.masked_mean(total, denom, loc)


def _nll(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
         reduction: str, loc: str | None) -> Tensor:
    """``nll_loss`` of checked arguments, built as nodes (``tracer.nll``)."""
    return NLL.nll_loss(input, target, weight, ignore_index, reduction, loc)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices ``target`` under log-probabilities ``input``."""
    loc = user_location()
    _check_reduction(reduction)
    _check_class_target("nll_loss", input, target, loc)
    num_classes = input.shape[1 if input.ndim > 1 else 0]
    _check_target_range("nll_loss", target, num_classes, ignore_index, loc)
    _check_class_weight("nll_loss", weight, num_classes, loc)
    return _nll(input, target, weight, ignore_index, reduction, loc)


def _check_class_target(op: str, input: Tensor, target: Tensor, loc: str | None) -> None:
    if input.ndim == 0:
        raise ShapeError(with_location(
            f"{op}: input must have a class dim (shape (C), (N, C) or (N, C, d1, ...)), got a "
            "0-d tensor", loc))
    if target.dtype.is_floating_point or target.dtype == "bool":
        raise DTypeError(with_location(
            f"{op}: expected class indices of an integer dtype (int64) for target of shape "
            f"{list(target.shape)}, got {target.dtype}; float targets are class probabilities "
            f"and must have the input's shape {list(input.shape)}", loc))
    expected = (input.shape[0],) + tuple(input.shape[2:]) if input.ndim > 1 else ()
    if tuple(target.shape) != expected:
        raise ShapeError(with_location(
            f"{op}: target shape {list(target.shape)} does not match input shape "
            f"{list(input.shape)} (expected target shape {list(expected)})", loc))


def _check_target_range(op: str, target: Tensor, num_classes: int, ignore_index: int,
                        loc: str | None) -> None:
    """Class indices outside [0, C) (other than ``ignore_index``) are an IndexError, as in
    torch; a pending target is computed for the check, and inside fusegrad.compile every
    call's targets are checked (see ``tracer.value_checks``)."""
    in_range = in_range_test(0, num_classes)

    def check(values: np.ndarray) -> None:
        if in_range(values):
            return  # the common case, without building masks
        bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
        if bad.size:
            raise IndexError(with_location(
                f"{op}: Target {int(bad[0])} is out of bounds (number of classes: "
                f"{num_classes})", loc))
    check_values(target, check, ("class index", num_classes, ignore_index))


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (C), (N, C) or (N, C, d1, ...) with class indices or
    class probabilities (a float ``target`` of the input's shape)."""
    loc = user_location()
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if input.ndim == 0:
        _check_class_target("cross_entropy", input, target, loc)
    class_dim = 1 if input.ndim > 1 else 0
    num_classes = input.shape[class_dim]
    w = _class_weight("cross_entropy", weight, num_classes, class_dim, input.ndim, loc)
    logp = F.log_softmax(input, class_dim)
    if target.dtype.is_floating_point and tuple(target.shape) == tuple(input.shape):
        probs = target
        if label_smoothing:
            probs = probs * (1 - label_smoothing) + label_smoothing / num_classes
        per = logp * probs if w is None else logp * probs * w
        # the mean is over samples (and positions), whatever the weights sum to
        return _reduce(-F.sum(per, class_dim), reduction)
    _check_class_target("cross_entropy", input, target, loc)
    _check_target_range("cross_entropy", target, num_classes, ignore_index, loc)
    loss = _nll(logp, target, weight, ignore_index, reduction, loc)
    if not label_smoothing:
        return loss
    # torch's smoothing term: the sum over classes of -w_c logp_c, reduced like the nll term
    keep = F.to_dtype(F.ne(target, ignore_index), input.dtype)
    smooth = -F.sum(logp if w is None else logp * w, class_dim) * keep
    if reduction == "mean":
        if w is None:
            denom = F.sum(keep)
        else:
            mask = _class_mask(target, num_classes, class_dim, input.ndim, loc)
            denom = F.sum(F.sum(F.where(mask, w, 0.0), class_dim) * keep)
        smooth = _weighted_mean(F.sum(smooth), denom, loc)
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / num_classes)


from .functional_conv import (adaptive_avg_pool1d, adaptive_avg_pool2d,  # noqa: E402
                              adaptive_avg_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, conv1d,
                              conv2d, conv3d, max_pool1d, max_pool2d, max_pool3d, unfold)
from .functional_seq import (embedding, multi_head_attention_forward,  # noqa: E402
                             scaled_dot_product_attention)
from .functional_extra import cosine_similarity, interpolate, normalize, pad  # noqa: E402
