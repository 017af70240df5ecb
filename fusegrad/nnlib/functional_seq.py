"""Stateless functions for sequence layers: embedding lookup, dropout masks and attention.

Everything here is composed from public Tensor ops, so autodiff, fusion and every backend come
for free. Errors name the layer, what was expected and what was given, and the user's line.
"""
from __future__ import annotations

import math
import warnings
from typing import NoReturn

import numpy as np

from ..errors import DTypeError, ShapeError, with_location
from ..tracer import functions as F
from ..tracer.creation import buffer_tensor, zeros
from ..tracer.provenance import user_location
from ..tracer.tensor import Tensor
from ..tracer.value_checks import check_values, in_range_test
from . import functional as NF  # call-time use only: functional may import this module


def fail(layer: str, message: str, kind: type[Exception] = ShapeError) -> NoReturn:
    """Raise ``kind`` with ``"<layer>: <message>"`` and the user's ``file:line``."""
    raise kind(with_location(f"{layer}: {message}", user_location()))


# ---------------------------------------------------------------------------- dropout
def check_dropout_p(layer: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        fail(layer, f"dropout should be a number in range [0, 1] representing the probability "
             f"of an element being zeroed, got {p!r}", ValueError)


# ---------------------------------------------------------------------------- embedding
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` at the integer indices ``input``: shape ``input.shape + (dim,)``.

    Args:
        input: int32/int64 indices in ``[0, weight.shape[0])`` (others raise IndexError; a
            pending index tensor is computed for the check, see ``tracer.value_checks``).
        weight: the (num_embeddings, embedding_dim) table.
        padding_idx: the row at this index gets no gradient (its value is still read).
        max_norm, norm_type, scale_grad_by_freq, sparse: not supported (must keep defaults).
    """
    return lookup("embedding", input, weight, padding_idx, max_norm, scale_grad_by_freq, sparse)


def lookup(layer: str, input: Tensor, weight: Tensor, padding_idx: int | None,
           max_norm: float | None = None, scale_grad_by_freq: bool = False,
           sparse: bool = False) -> Tensor:
    """:func:`embedding` with errors that name ``layer``."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        fail(layer, "max_norm, scale_grad_by_freq and sparse gradients are not supported",
             NotImplementedError)
    if not isinstance(input, Tensor):
        fail(layer, f"input must be a Tensor of indices, got {type(input).__name__}", TypeError)
    if input.dtype.name not in ("int32", "int64"):
        fail(layer, f"indices must be int64 or int32, got {input.dtype.name} (shape "
             f"{list(input.shape)})", DTypeError)
    if weight.ndim != 2:
        fail(layer, f"weight must be 2-D (num_embeddings, embedding_dim), got shape "
             f"{list(weight.shape)}")
    num = weight.shape[0]
    loc = user_location()
    in_range = in_range_test(0, num)

    def check(values: np.ndarray) -> None:
        if in_range(values):
            return
        bad = values[(values < 0) | (values >= num)]
        raise IndexError(with_location(
            f"{layer}: index {int(bad[0])} is out of range for num_embeddings={num} (valid "
            f"indices are 0..{num - 1})", loc))
    check_values(input, check, ("embedding index", num))
    out = F.index_select(weight, 0, input)
    if padding_idx is None:
        return out
    if padding_idx < 0:
        padding_idx += num
    # The row is read as usual, but through a detached branch: it receives no gradient.
    is_pad = F.unsqueeze(F.eq(input, padding_idx), -1)
    return F.where(is_pad, F.detach(out), out)


# ---------------------------------------------------------------------------- masks
def float_mask(layer: str, mask: Tensor | None, name: str, dtype: str) -> Tensor | None:
    """An additive mask: a bool mask (True = masked out) becomes -inf/0; a float one is kept."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        fail(layer, f"{name} must be a Tensor, got {type(mask).__name__}", TypeError)
    if mask.dtype.name == "bool":
        return F.to_dtype(F.where(mask, -math.inf, 0.0), dtype)
    if not mask.dtype.is_floating_point:
        fail(layer, f"only bool and floating types of {name} are supported, got "
             f"{mask.dtype.name}", DTypeError)
    return mask


def _causal_bool(length: int, source_length: int) -> Tensor:
    """True where attention is allowed: key position <= query position (torch's tril)."""
    return buffer_tensor(np.tril(np.ones((length, source_length), dtype=np.bool_)))


def _pad_last(mask: Tensor) -> Tensor:
    """``mask`` with one zero column appended (for bias_k and add_zero_attn keys)."""
    return F.cat([mask, zeros(*mask.shape[:-1], 1, dtype=mask.dtype.name)], -1)


# ---------------------------------------------------------------------------- attention
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` with torch's mask conventions.

    Args:
        query: (..., L, E); key: (..., S, E); value: (..., S, Ev).
        attn_mask: bool (True = *may* attend, as in torch's SDPA) or float (added), broadcast to
            (..., L, S).
        dropout_p: dropout on the attention weights (always applied, as in torch).
        is_causal: mask out keys after each query (top-left aligned); excludes attn_mask.
        scale: defaults to 1/sqrt(E).
        enable_gqa: key/value may have fewer heads (dim -3) than query; they are repeated.
    """
    layer = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t.ndim < 2:
            fail(layer, f"{name} must be a Tensor with at least 2 dims, got "
                 f"{list(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        fail(layer, f"query {list(query.shape)}, key {list(key.shape)} and value "
             f"{list(value.shape)} do not fit: expected query (..., L, E), key (..., S, E), "
             "value (..., S, Ev)")
    if is_causal and attn_mask is not None:
        fail(layer, "an explicit attn_mask should not be set when is_causal=True", ValueError)
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        key, value = (_repeat_heads(layer, t, query.shape[-3]) for t in (key, value))
    length, source_length = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = F.matmul(query, F.transpose(key, -2, -1)) * scale
    if is_causal:
        attn_mask = _causal_bool(length, source_length)
    if attn_mask is not None:
        if attn_mask.dtype.name == "bool":
            bias = F.where(attn_mask, 0.0, -math.inf)
        else:
            bias = float_mask(layer, attn_mask, "attn_mask", query.dtype.name)
        scores = scores + F.to_dtype(bias, scores.dtype.name)
    weights = F.softmax(scores, -1)
    if dropout_p > 0:
        check_dropout_p(layer, dropout_p)
        weights = NF.dropout(weights, dropout_p)
    return F.matmul(weights, value)


def _repeat_heads(layer: str, t: Tensor, heads: int) -> Tensor:
    groups = t.shape[-3]
    if heads % groups:
        fail(layer, f"enable_gqa: query heads {heads} is not a multiple of key/value heads "
             f"{groups}")
    lead, rest = tuple(t.shape[:-3]), tuple(t.shape[-2:])
    t = F.expand(F.reshape(t, lead + (groups, 1) + rest), lead + (groups, heads // groups) + rest)
    return F.reshape(t, lead + (heads,) + rest)


def multi_head_attention_forward(
        query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
        in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, bias_k: Tensor | None,
        bias_v: Tensor | None, add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor,
        out_proj_bias: Tensor | None, training: bool = True,
        key_padding_mask: Tensor | None = None, need_weights: bool = True,
        attn_mask: Tensor | None = None, use_separate_proj_weight: bool = False,
        q_proj_weight: Tensor | None = None, k_proj_weight: Tensor | None = None,
        v_proj_weight: Tensor | None = None, static_k: Tensor | None = None,
        static_v: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """torch's ``F.multi_head_attention_forward``: inputs are sequence-first (L, N, E).

    Returns ``(attn_output, attn_weights)``; weights are None unless ``need_weights``, and
    averaged over heads when ``average_attn_weights``.
    """
    return multi_head_attention(
        "multi_head_attention_forward", query, key, value, embed_dim_to_check, num_heads,
        in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight,
        out_proj_bias, training, key_padding_mask, need_weights, attn_mask,
        use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k,
        static_v, average_attn_weights, is_causal, batch_first=False)


def multi_head_attention(
        layer: str, query: Tensor, key: Tensor, value: Tensor, embed_dim: int, num_heads: int,
        in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, bias_k: Tensor | None,
        bias_v: Tensor | None, add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor,
        out_proj_bias: Tensor | None, training: bool, key_padding_mask: Tensor | None,
        need_weights: bool, attn_mask: Tensor | None, use_separate_proj_weight: bool,
        q_proj_weight: Tensor | None, k_proj_weight: Tensor | None,
        v_proj_weight: Tensor | None, static_k: Tensor | None, static_v: Tensor | None,
        average_attn_weights: bool, is_causal: bool, batch_first: bool
) -> tuple[Tensor, Tensor | None]:
    """Multi-head attention on sequence-first or (``batch_first``) batch-first inputs.

    Projections run in the input's own layout (one matmul each, or one for self-attention)
    and heads are split with a single permute to (N, heads, L, head_dim), so no layout is
    transposed twice.
    """
    batched = _check_attention_inputs(layer, query, key, value, key_padding_mask, attn_mask,
                                      num_heads)
    if not batched:
        query, key, value = _unsqueeze_keep_identity(query, key, value)
        if key_padding_mask is not None:
            key_padding_mask = F.unsqueeze(key_padding_mask, 0)
        batch_first = False
    bdim, sdim = (0, 1) if batch_first else (1, 0)
    length, batch, e = query.shape[sdim], query.shape[bdim], query.shape[2]
    source_length = key.shape[sdim]
    if e != embed_dim:
        fail(layer, f"query has {e} features (shape {list(query.shape)}) but embed_dim is "
             f"{embed_dim}")
    if embed_dim % num_heads:
        fail(layer, f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}",
             ValueError)
    head_dim = embed_dim // num_heads
    if key.shape[bdim] != batch or value.shape[bdim] != batch:
        fail(layer, f"query, key and value must have the same batch size, got shapes "
             f"{list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
    if key.shape[sdim] != value.shape[sdim]:
        fail(layer, f"key and value must have the same sequence length, got shapes "
             f"{list(key.shape)} and {list(value.shape)}")
    dtype = query.dtype.name
    if key_padding_mask is not None and attn_mask is not None and \
            (key_padding_mask.dtype.name == "bool") != (attn_mask.dtype.name == "bool"):
        warnings.warn("Support for mismatched key_padding_mask and attn_mask is deprecated. "
                      "Use same type for both instead.", stacklevel=3)
    key_padding_mask = float_mask(layer, key_padding_mask, "key_padding_mask", dtype)
    if is_causal and attn_mask is None:
        fail(layer, "is_causal=True is a hint that attn_mask is the causal mask: pass attn_mask "
             "too (for example a bool mask with True above the diagonal)", ValueError)
    attn_mask = float_mask(layer, attn_mask, "attn_mask", dtype)
    if attn_mask is not None:
        attn_mask = _attn_mask_4d(layer, attn_mask, batch, num_heads, length, source_length)
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (batch, source_length):
        fail(layer, f"key_padding_mask must have shape {[batch, source_length]} (batch, "
             f"source length), got {list(key_padding_mask.shape)}")

    q, k, v = _in_projection(layer, query, key, value, embed_dim, in_proj_weight, in_proj_bias,
                             use_separate_proj_weight, q_proj_weight, k_proj_weight,
                             v_proj_weight)
    if bias_k is not None and bias_v is not None:
        k, v = (F.cat([t, F.expand(F.reshape(b, (1, 1, embed_dim)), _one_step(t.shape, sdim))],
                      sdim) for t, b in ((k, bias_k), (v, bias_v)))
        attn_mask = _pad_last(attn_mask) if attn_mask is not None else None
        key_padding_mask = _pad_last(key_padding_mask) if key_padding_mask is not None else None
    elif (bias_k is None) != (bias_v is None):
        fail(layer, "bias_k and bias_v must both be given or both be None", ValueError)

    perm = (0, 2, 1, 3) if batch_first else (1, 2, 0, 3)
    q = F.permute(F.reshape(q, tuple(q.shape[:2]) + (num_heads, head_dim)), perm)
    k = _static(layer, "static_k", static_k, batch, num_heads, head_dim) \
        if static_k is not None else \
        F.permute(F.reshape(k, tuple(k.shape[:2]) + (num_heads, head_dim)), perm)
    v = _static(layer, "static_v", static_v, batch, num_heads, head_dim) \
        if static_v is not None else \
        F.permute(F.reshape(v, tuple(v.shape[:2]) + (num_heads, head_dim)), perm)
    if add_zero_attn:
        k, v = (F.cat([t, zeros(batch, num_heads, 1, head_dim, dtype=t.dtype.name)], 2)
                for t in (k, v))
        attn_mask = _pad_last(attn_mask) if attn_mask is not None else None
        key_padding_mask = _pad_last(key_padding_mask) if key_padding_mask is not None else None

    source_length = k.shape[2]
    mask = attn_mask
    if key_padding_mask is not None:
        kpm = F.reshape(key_padding_mask, (batch, 1, 1, source_length))
        mask = kpm if mask is None else mask + kpm
    scores = F.matmul(q * math.sqrt(1.0 / head_dim), F.transpose(k, -2, -1))
    if mask is not None:
        scores = mask + scores
    weights = F.softmax(scores, -1)
    if training and dropout_p > 0:
        weights = NF.dropout(weights, dropout_p)
    out = F.matmul(weights, v)                                     # (N, heads, L, head_dim)
    out = F.permute(out, (0, 2, 1, 3) if batch_first else (2, 0, 1, 3))
    out = F.reshape(out, tuple(out.shape[:2]) + (embed_dim,))
    out = F.matmul(out, F.t(out_proj_weight))
    if out_proj_bias is not None:
        out = out + out_proj_bias
    if not need_weights:
        return (out if batched else F.squeeze(out, 1)), None
    if average_attn_weights:
        weights = F.mean(weights, 1)
    if not batched:
        out, weights = F.squeeze(out, 1), F.squeeze(weights, 0)
    return out, weights


def _unsqueeze_keep_identity(query: Tensor, key: Tensor, value: Tensor
                             ) -> tuple[Tensor, Tensor, Tensor]:
    """Add the batch dim, keeping ``query is key is value``: the projection relies on it."""
    q = F.unsqueeze(query, 1)
    k = q if key is query else F.unsqueeze(key, 1)
    v = k if value is key else q if value is query else F.unsqueeze(value, 1)
    return q, k, v


def _one_step(shape: tuple[int, ...], sdim: int) -> tuple[int, ...]:
    return tuple(1 if i == sdim else s for i, s in enumerate(shape))


def _check_attention_inputs(layer: str, query: Tensor, key: Tensor, value: Tensor,
                            key_padding_mask: Tensor | None, attn_mask: Tensor | None,
                            num_heads: int) -> bool:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            fail(layer, f"{name} must be a Tensor, got {type(t).__name__}", TypeError)
    if query.ndim not in (2, 3):
        fail(layer, f"query must have 3 dimensions (batched) or 2 (unbatched), got "
             f"{query.ndim} (shape {list(query.shape)})")
    batched = query.ndim == 3
    kind = "batched (3-D)" if batched else "unbatched (2-D)"
    if key.ndim != query.ndim or value.ndim != query.ndim:
        fail(layer, f"for {kind} query, key and value must be {query.ndim}-D too, got shapes "
             f"{list(key.shape)} and {list(value.shape)}")
    if key_padding_mask is not None and key_padding_mask.ndim != query.ndim - 1:
        fail(layer, f"for {kind} query, key_padding_mask must be {query.ndim - 1}-D, got shape "
             f"{list(key_padding_mask.shape)}")
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        fail(layer, f"attn_mask must be 2-D (L, S) or 3-D (batch*num_heads, L, S), got shape "
             f"{list(attn_mask.shape)}")
    return batched


def _attn_mask_4d(layer: str, mask: Tensor, batch: int, heads: int, length: int,
                  source_length: int) -> Tensor:
    if mask.ndim == 2:
        if tuple(mask.shape) != (length, source_length):
            fail(layer, f"2-D attn_mask must have shape {[length, source_length]} (target, "
                 f"source length), got {list(mask.shape)}")
        return F.reshape(mask, (1, 1, length, source_length))
    if tuple(mask.shape) != (batch * heads, length, source_length):
        fail(layer, f"3-D attn_mask must have shape {[batch * heads, length, source_length]} "
             f"(batch*num_heads, target, source length), got {list(mask.shape)}")
    return F.reshape(mask, (batch, heads, length, source_length))


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    out = F.matmul(x, F.t(w))
    return out + b if b is not None else out


def _in_projection(layer: str, query: Tensor, key: Tensor, value: Tensor, e: int,
                   in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, separate: bool,
                   q_w: Tensor | None, k_w: Tensor | None, v_w: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    bq = bk = bv = None
    if in_proj_bias is not None:
        if tuple(in_proj_bias.shape) != (3 * e,):
            fail(layer, f"in_proj_bias must have shape {[3 * e]}, got {list(in_proj_bias.shape)}")
        bq, bk, bv = F.chunk(in_proj_bias, 3)
    if separate:
        if q_w is None or k_w is None or v_w is None:
            fail(layer, "use_separate_proj_weight=True needs q_proj_weight, k_proj_weight and "
                 "v_proj_weight", ValueError)
        for name, x, w in (("query", query, q_w), ("key", key, k_w), ("value", value, v_w)):
            if x.shape[-1] != w.shape[1]:
                fail(layer, f"{name} has {x.shape[-1]} features (shape {list(x.shape)}) but "
                     f"its projection expects {w.shape[1]} (weight shape {list(w.shape)})")
        return _linear(query, q_w, bq), _linear(key, k_w, bk), _linear(value, v_w, bv)
    if in_proj_weight is None:
        fail(layer, "in_proj_weight is None but use_separate_proj_weight is False", ValueError)
    if key.shape[-1] != e or value.shape[-1] != e:
        fail(layer, f"key and value must have embed_dim={e} features like the query (use "
             f"kdim/vdim otherwise), got shapes {list(key.shape)} and {list(value.shape)}")
    if query is key and key is value:
        # self-attention: one matmul for q, k and v
        return F.chunk(_linear(query, in_proj_weight, in_proj_bias), 3, -1)
    if key is value:
        # encoder-decoder attention: one matmul for k and v
        wq, wkv = F.split(in_proj_weight, [e, 2 * e])
        bkv = F.split(in_proj_bias, [e, 2 * e])[1] if in_proj_bias is not None else None
        k, v = F.chunk(_linear(key, wkv, bkv), 2, -1)
        return _linear(query, wq, bq), k, v
    wq, wk, wv = F.chunk(in_proj_weight, 3)
    return _linear(query, wq, bq), _linear(key, wk, bk), _linear(value, wv, bv)


def _static(layer: str, name: str, t: Tensor, batch: int, heads: int, head_dim: int) -> Tensor:
    if t.ndim != 3 or t.shape[0] != batch * heads or t.shape[2] != head_dim:
        fail(layer, f"{name} must have shape [{batch * heads}, S, {head_dim}] (batch*num_heads, "
             f"source length, head_dim), got {list(t.shape)}")
    return F.reshape(t, (batch, heads, t.shape[1], head_dim))
