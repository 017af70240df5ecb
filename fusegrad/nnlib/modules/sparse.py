"""Embedding: a lookup table of learnable vectors indexed by integer ids."""
from __future__ import annotations

from typing import Any

from ...tracer.creation import empty
from ...tracer.grad_mode import no_grad
from ...tracer.tensor import Tensor
from .. import functional_seq as FS
from .. import init
from ..module import Module
from ..parameter import Parameter


class Embedding(Module):
    """``weight[input]`` with weight of shape (num_embeddings, embedding_dim), drawn from N(0, 1).

    Args:
        num_embeddings: the number of rows (valid ids are 0..num_embeddings-1).
        embedding_dim: the size of each vector.
        padding_idx: this row starts at zero and never receives a gradient (negative counts
            from the end).
        max_norm, norm_type, scale_grad_by_freq, sparse: accepted for API compatibility;
            only the defaults are supported.
        _weight: an initial (num_embeddings, embedding_dim) table instead of random values.
        _freeze: with ``_weight``, whether the table is frozen (requires_grad=False).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0,
                 scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight: Tensor | None = None, _freeze: bool = False, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            FS.fail("Embedding", f"num_embeddings and embedding_dim must be positive, got "
                    f"{num_embeddings} and {embedding_dim}", ValueError)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                FS.fail("Embedding", f"padding_idx must be within num_embeddings "
                        f"({-num_embeddings}..{num_embeddings - 1}), got {padding_idx}",
                        ValueError)
            padding_idx %= num_embeddings
        if max_norm is not None or scale_grad_by_freq or sparse:
            FS.fail("Embedding", "max_norm, scale_grad_by_freq and sparse gradients are not "
                    "supported", NotImplementedError)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype,
                                          device=device))
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                FS.fail("Embedding", f"_weight must have shape {[num_embeddings, embedding_dim]}"
                        f" (num_embeddings, embedding_dim), got {list(_weight.shape)}")
            self.weight = Parameter(_weight.detach(), requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self) -> None:
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input: Tensor) -> Tensor:
        return FS.lookup("Embedding", input, self.weight, self.padding_idx)

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True,
                        padding_idx: int | None = None, max_norm: float | None = None,
                        norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                        sparse: bool = False) -> Embedding:
        """An Embedding holding ``embeddings`` (2-D); frozen unless ``freeze=False``."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            got = list(embeddings.shape) if isinstance(embeddings, Tensor) else \
                type(embeddings).__name__
            FS.fail("Embedding.from_pretrained", f"embeddings must be a 2-D Tensor "
                    f"(num_embeddings, embedding_dim), got {got}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
