"""MultiheadAttention with torch's parameters, masks, shapes and state_dict names."""
from __future__ import annotations

from typing import Any

from ...tracer.creation import empty
from ...tracer.tensor import Tensor
from .. import functional_seq as FS
from .. import init
from ..module import Module
from ..parameter import Parameter
from .linear import Linear


class NonDynamicallyQuantizableLinear(Linear):
    """The output projection's class in torch (a plain Linear; the name keeps reprs equal)."""


class MultiheadAttention(Module):
    """Attention over ``num_heads`` heads of size ``embed_dim // num_heads``.

    Args:
        embed_dim: the query's features (and the output's).
        num_heads: parallel heads; must divide embed_dim.
        dropout: dropout on the attention weights, in training mode only.
        bias: biases for the input projections (``in_proj_bias``) and ``out_proj``.
        add_bias_kv: learnable ``bias_k``/``bias_v`` appended to the keys/values.
        add_zero_attn: a zero key/value appended per head.
        kdim, vdim: the key's/value's features (default embed_dim); when they differ,
            separate ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` replace
            ``in_proj_weight``.
        batch_first: inputs and output are (N, L, E) instead of (L, N, E).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output, attn_weights)``:
    attn_output (L, N, E) (batch_first: (N, L, E); unbatched: (L, E)); attn_weights (N, L, S),
    or (N, num_heads, L, S) without averaging, or None unless ``need_weights``. Masks: bool
    True means "do not attend"; float masks are added to the scores. ``key_padding_mask`` is
    (N, S); ``attn_mask`` is (L, S) or (N*num_heads, L, S). ``is_causal`` is only a hint that
    ``attn_mask`` is causal (which must then be given), as in torch.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            FS.fail("MultiheadAttention", f"embed_dim and num_heads must be greater than 0, got "
                    f"embed_dim={embed_dim} and num_heads={num_heads}", ValueError)
        if embed_dim % num_heads:
            FS.fail("MultiheadAttention", f"embed_dim {embed_dim} is not divisible by "
                    f"num_heads {num_heads}", ValueError)
        FS.check_dropout_p("MultiheadAttention", dropout)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.head_dim = embed_dim // num_heads
        kw = {"dtype": dtype, "device": device}
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **kw)
        if add_bias_kv:
            self.bias_k = Parameter(empty(1, 1, embed_dim, **kw))
            self.bias_v = Parameter(empty(1, 1, embed_dim, **kw))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        return FS.multi_head_attention(
            "MultiheadAttention", query, key, value, self.embed_dim, self.num_heads,
            self.in_proj_weight, self.in_proj_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            self.training, key_padding_mask, need_weights, attn_mask,
            not self._qkv_same_embed_dim, self.q_proj_weight, self.k_proj_weight,
            self.v_proj_weight, None, None, average_attn_weights, is_causal, self.batch_first)

    def extra_repr(self) -> str:
        return ""
