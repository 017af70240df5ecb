"""Issue #12: a CNN classifier written for ``import torch`` runs unchanged on
``import fusegrad as torch`` and its per-step losses match PyTorch's."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch as real_torch

import fusegrad
from port_helpers import assert_losses_match, load_numpy_weights


def train_cnn(torch: ModuleType, seed: int, weights_file: Path) -> tuple[list[float], list[float]]:
    """Three epochs of SGD with a step schedule on synthetic 1x12x12 images of 3 classes, the
    weights saved to ``weights_file``, then an evaluation pass of a model loaded from it.

    Returns the per-step training losses, and the per-epoch mean losses followed by the
    evaluation loss and accuracy.
    """
    nn = torch.nn
    F = torch.nn.functional
    DataLoader, Sampler = torch.utils.data.DataLoader, torch.utils.data.Sampler
    TensorDataset = torch.utils.data.TensorDataset

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 4, kernel_size=3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 8, kernel_size=3),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.flatten = nn.Flatten()
            self.drop = nn.Dropout(p=0.0)
            self.fc1 = nn.Linear(8 * 2 * 2, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            x = self.flatten(self.features(x))
            return self.fc2(self.drop(F.relu(self.fc1(x))))

    class FixedOrder(Sampler):
        """Epoch orders drawn from numpy: the libraries' shuffling streams differ."""

        def __init__(self, n: int, seed: int) -> None:
            self.n, self.rng = n, np.random.default_rng(seed)

        def __iter__(self):
            return iter(self.rng.permutation(self.n).tolist())

        def __len__(self) -> int:
            return self.n

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 96)
    images = rng.normal(0.0, 1.0, (96, 1, 12, 12)).astype(np.float32)
    images[:, 0, 3:9, 3:9] += labels[:, None, None].astype(np.float32)  # a learnable signal
    train_set = TensorDataset(torch.tensor(images[:64]), torch.tensor(labels[:64]))
    test_set = TensorDataset(torch.tensor(images[64:]), torch.tensor(labels[64:]))
    train_loader = DataLoader(train_set, batch_size=16, sampler=FixedOrder(64, seed + 1))
    test_loader = DataLoader(test_set, batch_size=16, shuffle=False)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    model = Net().to(device)
    load_numpy_weights(torch, model, seed)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    losses, epoch_losses = [], []
    for _epoch in range(3):
        model.train()
        running_loss, seen = 0.0, 0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            running_loss += loss.item() * xb.size(0)
            seen += xb.size(0)
        scheduler.step()
        epoch_losses.append(running_loss / seen)

    torch.save(model.state_dict(), weights_file)
    evaluated = Net().to(device)
    evaluated.load_state_dict(torch.load(weights_file, map_location=device, weights_only=True))
    evaluated.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for xb, yb in test_loader:
            logits = evaluated(xb.to(device))
            total_loss += criterion(logits, yb).item() * len(yb)
            correct += (logits.argmax(dim=1) == yb).sum().item()
    return losses, epoch_losses + [total_loss / len(test_set), correct / len(test_set)]


@pytest.mark.numba
def test_cnn_classifier_matches_torch(tmp_path):
    want_train, want_eval = train_cnn(real_torch, 0, tmp_path / "torch.pt")
    got_train, got_eval = train_cnn(fusegrad, 0, tmp_path / "fusegrad.pt")
    assert_losses_match(got_train, want_train)
    assert_losses_match(got_eval, want_eval)
