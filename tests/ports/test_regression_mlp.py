"""Issue #12: a regression MLP with hand-written batching and a checkpoint every epoch, written
for ``import torch``, runs unchanged on ``import fusegrad as torch``: its per-step losses match
PyTorch's, resuming from a checkpoint continues with the uninterrupted run's losses, and one
epoch of the loop compiles at most 3 programs."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch as real_torch

import fusegrad
from fusegrad.tracer.realize import STATS, clear_program_cache
from port_helpers import assert_losses_match, load_numpy_weights

N_ITEMS, N_HELD_OUT, BATCH, EPOCHS = 512, 128, 32, 3
STEPS_PER_EPOCH = N_ITEMS // BATCH


def train_regression(torch: ModuleType, seed: int, checkpoint: Path, stop_after: int | None = None,
                     resume: bool = False,
                     at_epoch_boundary: Callable[[], None] = lambda: None) -> list[float]:
    """Adam with an exponential schedule on a noisy nonlinear regression of 512 items, batches
    of 32 cut by hand from a per-epoch permutation; after every epoch a validation loss on 128
    held-out items and a checkpoint of model, optimizer, scheduler and epoch.

    Args:
        stop_after: end after this epoch (a run that is interrupted).
        resume: start from ``checkpoint`` with a fresh model and optimizer.
        at_epoch_boundary: called before the first epoch and after each epoch's checkpoint.

    Returns, for each epoch this call ran, the per-step training losses then the validation
    loss.
    """
    nn = torch.nn
    F = torch.nn.functional

    class Regressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(8, 32)
            self.out = nn.Linear(32, 1)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(x)))

    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, 1.0, (N_ITEMS + N_HELD_OUT, 8)).astype(np.float32)
    targets = (np.sin(features[:, :1]) + 0.5 * features[:, 1:2] * features[:, 2:3]
               + rng.normal(0.0, 0.05, (len(features), 1))).astype(np.float32)
    device = torch.device("cpu")
    x, y = torch.tensor(features[:N_ITEMS]).to(device), torch.tensor(targets[:N_ITEMS]).to(device)
    x_val = torch.tensor(features[N_ITEMS:]).to(device)
    y_val = torch.tensor(targets[N_ITEMS:]).to(device)

    model = Regressor().to(device)
    load_numpy_weights(torch, model, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.7)
    loss_fn = nn.MSELoss()
    start = 0
    if resume:
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["opt"])
        scheduler.load_state_dict(state["sched"])
        start = state["epoch"] + 1

    losses = []
    at_epoch_boundary()
    for epoch in range(start, EPOCHS):
        model.train()
        perm = torch.tensor(np.random.default_rng([seed, epoch]).permutation(N_ITEMS))
        for i in range(0, N_ITEMS, BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        model.eval()
        with torch.no_grad():
            losses.append(F.mse_loss(model(x_val), y_val).item())
        torch.save({"model": model.state_dict(), "opt": optimizer.state_dict(),
                    "sched": scheduler.state_dict(), "epoch": epoch}, checkpoint)
        at_epoch_boundary()
        if epoch == stop_after:
            break
    return losses


@pytest.mark.numba
def test_regression_mlp_matches_torch(tmp_path):
    want = train_regression(real_torch, 0, tmp_path / "torch.pt")
    got = train_regression(fusegrad, 0, tmp_path / "fusegrad.pt")
    assert len(got) == EPOCHS * (STEPS_PER_EPOCH + 1)
    assert_losses_match(got, want)


@pytest.mark.numba
@pytest.mark.parametrize("torch", [real_torch, fusegrad], ids=["torch", "fusegrad"])
def test_resuming_from_a_checkpoint_continues_the_same_losses(torch, tmp_path):
    uninterrupted = train_regression(torch, 0, tmp_path / "full.pt")
    first = train_regression(torch, 0, tmp_path / "part.pt", stop_after=0)
    rest = train_regression(torch, 0, tmp_path / "part.pt", resume=True)
    assert len(first) == STEPS_PER_EPOCH + 1
    np.testing.assert_allclose(first + rest, uninterrupted, rtol=1e-6)


@pytest.mark.numba
def test_one_hand_batched_epoch_compiles_at_most_three_programs(tmp_path):
    clear_program_cache()
    marks: list[int] = []
    train_regression(fusegrad, 0, tmp_path / "count.pt", stop_after=1,
                     at_epoch_boundary=lambda: marks.append(STATS.programs_compiled))
    first_epoch, second_epoch = marks[1] - marks[0], marks[2] - marks[1]
    # the forward and backward, the optimizer's update (replayed on later steps), the validation;
    # the weights loaded before the loop are copied by numpy, without a program
    assert first_epoch <= 3, f"{first_epoch} programs in the first epoch"
    assert second_epoch == 0, f"{second_epoch} programs in the second epoch"
