"""Issue #12: a small Transformer trained with AdamW, a warm-up scheduler and gradient clipping,
written for ``import torch``, runs unchanged on ``import fusegrad as torch`` and its per-step
losses match PyTorch's."""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch as real_torch

import fusegrad
from port_helpers import assert_losses_match, load_numpy_weights

VOCAB, SEQ, D_MODEL = 8, 6, 16


def train_transformer(torch: ModuleType, seed: int) -> tuple[list[float], list[float]]:
    """Sixteen AdamW steps on a copy task (each position predicts the token before it) under a
    causal mask, the head tied to a padded embedding, with a LambdaLR warm-up then cosine
    annealing (``SequentialLR``) and ``clip_grad_norm_``, then an evaluation pass.

    Returns the per-step training losses, and the per-step learning rates followed by the
    evaluation loss, the evaluation accuracy and the parameter count.
    """
    nn = torch.nn
    F = torch.nn.functional

    class TinyTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, D_MODEL, padding_idx=0)
            self.pos = nn.Parameter(torch.zeros(1, SEQ, D_MODEL))
            layer = nn.TransformerEncoderLayer(d_model=D_MODEL, nhead=2, dim_feedforward=32,
                                               dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.head = nn.Linear(D_MODEL, VOCAB)
            self.head.weight = self.embed.weight  # tied input and output embeddings

        def forward(self, tokens):
            mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
            h = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
            return self.head(self.encoder(h, mask=mask, is_causal=True))

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    batches = [torch.tensor(rng.integers(0, VOCAB, (8, SEQ))) for _ in range(4)]
    held_out = torch.tensor(rng.integers(0, VOCAB, (8, SEQ)))

    model = TinyTransformer()
    load_numpy_weights(torch, model, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98),
                                  weight_decay=0.01)
    schedules = torch.optim.lr_scheduler
    warmup = schedules.LambdaLR(optimizer, lambda step: (step + 1) / 4)
    decay = schedules.CosineAnnealingLR(optimizer, T_max=12, eta_min=1e-4)
    scheduler = schedules.SequentialLR(optimizer, [warmup, decay], milestones=[4])

    def copy_loss(tokens):
        logits = model(tokens)
        return F.cross_entropy(logits[:, 1:].reshape(-1, VOCAB), tokens[:, :-1].reshape(-1))

    losses, learning_rates = [], []
    model.train()
    for step in range(16):
        optimizer.zero_grad()
        loss = copy_loss(batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        learning_rates.append(scheduler.get_last_lr()[0])

    model.eval()
    with torch.no_grad():
        eval_loss = copy_loss(held_out).item()
        predicted = model(held_out).argmax(dim=-1)
        accuracy = (predicted[:, 1:] == held_out[:, :-1]).float().mean().item()
    n_params = sum(p.numel() for p in model.parameters())
    return losses, learning_rates + [eval_loss, accuracy, float(n_params)]


@pytest.mark.numba
def test_transformer_matches_torch():
    want_train, want_eval = train_transformer(real_torch, seed=0)
    got_train, got_eval = train_transformer(fusegrad, seed=0)
    assert_losses_match(got_train, want_train)
    assert_losses_match(got_eval, want_eval)
