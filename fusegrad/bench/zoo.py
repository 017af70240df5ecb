"""The benchmark model zoo: each workload written once against a torch-like namespace.

``build(lib)`` takes the ``torch`` module or the ``fusegrad`` module and returns the model, its
loss, its optimizer and a fixed batch, so both libraries run the same code on the same shapes.
:func:`build_pair` builds both and copies PyTorch's initial weights into fusegrad (through
numpy), so both start from the same state. Everything here is user code as far as fusegrad's
provenance is concerned: ``fusegrad dump`` points at these lines.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Built:
    """One workload built in one library: ``step()`` trains once and returns the loss."""

    model: Any
    loss_fn: Callable[..., Any]
    optimizer: Any
    inputs: tuple[Any, ...]
    target: Any

    def forward(self) -> Any:
        return self.model(*self.inputs)

    def step(self) -> Any:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(*self.inputs), self.target)
        loss.backward()
        self.optimizer.step()
        return loss


@dataclass(frozen=True)
class Workload:
    """A named training workload: ``make(lib, small)`` builds it (``small``: test-sized shapes
    of the same structure)."""

    name: str
    description: str
    make: Callable[[Any, bool], Built]


def _batch(seed: int, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _labels(seed: int, n: int, classes: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n).astype(np.int64)


# ---------------------------------------------------------------------------- the workloads
def mlp(lib: Any, batch: int, small: bool) -> Built:
    nn = lib.nn
    hidden = 32 if small else 256
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=1e-4)
    n = 8 if small else batch
    return Built(model, nn.CrossEntropyLoss(), opt, (lib.tensor(_batch(1, (n, 784))),),
                 lib.tensor(_labels(2, n, 10)))


def cnn(lib: Any, small: bool) -> Built:
    nn = lib.nn
    ch, size, n = (8, 8, 4) if small else (64, 32, 32)
    model = nn.Sequential(
        nn.Conv2d(3, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(ch),
        nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(ch * (size // 4) ** 2, 10))
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    return Built(model, nn.CrossEntropyLoss(), opt, (lib.tensor(_batch(3, (n, 3, size, size))),),
                 lib.tensor(_labels(4, n, 10)))


def _recurrent(lib: Any, kind: str, small: bool) -> Any:
    nn = lib.nn
    layer = nn.LSTM if kind == "lstm" else nn.GRU
    feat, hidden = (10, 16) if small else (100, 256)

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = layer(feat, hidden, num_layers=2, batch_first=True)
            self.head = nn.Linear(hidden, 10)

        def forward(self, x: Any) -> Any:
            _, state = self.rnn(x)
            h_n = state[0] if kind == "lstm" else state
            return self.head(h_n[-1])   # the last layer's final hidden state

    return Recurrent(), feat


def lstm(lib: Any, small: bool) -> Built:
    model, feat = _recurrent(lib, "lstm", small)
    n, t = (4, 5) if small else (32, 35)
    opt = lib.optim.RMSprop(model.parameters(), lr=0.01)
    return Built(model, lib.nn.CrossEntropyLoss(), opt, (lib.tensor(_batch(5, (n, t, feat))),),
                 lib.tensor(_labels(6, n, 10)))


def gru(lib: Any, small: bool) -> Built:
    model, feat = _recurrent(lib, "gru", small)
    n, t = (4, 5) if small else (32, 35)
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    return Built(model, lib.nn.MSELoss(), opt, (lib.tensor(_batch(7, (n, t, feat))),),
                 lib.tensor(_batch(8, (n, 10))))


def attn(lib: Any, small: bool) -> Built:
    nn = lib.nn
    vocab, dim, heads, n, t = (50, 16, 2, 2, 8) if small else (10000, 512, 8, 16, 64)

    class CausalAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.head = nn.Linear(dim, vocab)
            causal = np.triu(np.ones((t, t), dtype=bool), k=1)   # True: may not attend
            self.register_buffer("mask", lib.tensor(causal))

        def forward(self, tokens: Any) -> Any:
            x = self.embed(tokens)
            y, _ = self.attn(x, x, x, attn_mask=self.mask, need_weights=False)
            return self.head(y).reshape(-1, vocab)

    tokens = np.random.default_rng(9).integers(0, vocab, (n, t + 1)).astype(np.int64)
    model = CausalAttention()
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    # next-token prediction: the target is the input shifted by one
    return Built(model, nn.CrossEntropyLoss(), opt, (lib.tensor(tokens[:, :-1].copy()),),
                 lib.tensor(tokens[:, 1:].reshape(-1).copy()))


def tiny(lib: Any, small: bool) -> Built:
    nn = lib.nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(10, 10) for _ in range(5)])

        def forward(self, x: Any) -> Any:
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < len(self.layers) - 1:
                    x = lib.relu(x)
            return x

    model = Tiny()
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    return Built(model, nn.MSELoss(), opt, (lib.tensor(_batch(10, (8, 10))),),
                 lib.tensor(_batch(11, (8, 10))))


def lstmcell_unrolled(lib: Any, small: bool) -> Built:
    """The classic "predict a sine wave" example: two stacked LSTMCells unrolled in Python."""
    nn = lib.nn
    hidden, steps, n = (51, 12, 3) if small else (51, 60, 16)

    class Sequence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, x: Any) -> Any:
            b = x.shape[0]
            h1 = lib.zeros(b, hidden, dtype=lib.float64, device=x.device)
            c1 = lib.zeros(b, hidden, dtype=lib.float64, device=x.device)
            h2 = lib.zeros(b, hidden, dtype=lib.float64, device=x.device)
            c2 = lib.zeros(b, hidden, dtype=lib.float64, device=x.device)
            outputs = []
            for x_t in x.split(1, dim=1):
                h1, c1 = self.lstm1(x_t, (h1, c1))
                h2, c2 = self.lstm2(h1, (h2, c2))
                outputs.append(self.linear(h2))
            return lib.cat(outputs, dim=1)

    phase = np.random.default_rng(12).uniform(0, 2 * np.pi, (n, 1))
    wave = np.sin(phase + 0.1 * np.arange(steps + 1))
    model = Sequence().double()
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    return Built(model, nn.MSELoss(), opt, (lib.tensor(wave[:, :-1].copy()),),
                 lib.tensor(wave[:, 1:].copy()))


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("mlp_b64", "Linear(784,256)-ReLU-Linear(256,10), CE, SGD nesterov, batch 64",
             lambda lib, small: mlp(lib, 64, small)),
    Workload("mlp_b512", "the same MLP at batch 512", lambda lib, small: mlp(lib, 512, small)),
    Workload("cnn", "2x Conv2d(64)+ReLU+MaxPool, BatchNorm2d, Linear(4096,10); 32x3x32x32; Adam",
             cnn),
    Workload("lstm", "LSTM(100,256,2 layers) on 32x35x100, Linear(256,10), CE, RMSprop", lstm),
    Workload("gru", "GRU(100,256,2 layers) on 32x35x100, Linear(256,10), MSE, SGD", gru),
    Workload("attn", "Embedding(10000,512), causal MultiheadAttention(512,8), Linear(512,10000); "
             "16x64 tokens, CE, Adam", attn),
    Workload("tiny", "5x Linear(10,10) in a ModuleList, ReLU; batch 8; MSE; Adam", tiny),
    Workload("lstmcell_unrolled", "2 LSTMCell(1->51->51)+Linear(51,1) unrolled over 60 steps, "
             "float64, MSE, Adam", lstmcell_unrolled),
)}


def build(name: str, lib: Any, small: bool = False, seed: int = 0) -> Built:
    """Workload ``name`` built in ``lib`` (``torch`` or ``fusegrad``) from ``lib``'s own
    seeded initialisation."""
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; the zoo has: {', '.join(WORKLOADS)}")
    lib.manual_seed(seed)
    return WORKLOADS[name].make(lib, small)


def build_pair(name: str, small: bool = False, seed: int = 0) -> tuple[Built, Built]:
    """The workload in PyTorch and in fusegrad, fusegrad starting from PyTorch's weights."""
    import torch

    import fusegrad
    ref = build(name, torch, small, seed)
    ours = build(name, fusegrad, small, seed)
    copy_state(ref.model, ours.model)
    return ref, ours


def copy_state(torch_model: Any, fusegrad_model: Any) -> None:
    """Load a PyTorch module's parameters and buffers into the same fusegrad module."""
    import fusegrad
    state = {k: fusegrad.tensor(v.detach().cpu().numpy().copy())
             for k, v in torch_model.state_dict().items()}
    fusegrad_model.load_state_dict(state)
