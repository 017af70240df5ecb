"""Graphs far deeper than Python's recursion limit: every pass, key, printer, fusion step and
code generator walks them without recursing.

A 10,000-deep elementwise chain runs forward and backward on both backends, eagerly and under
``fusegrad.compile``; a 500-step unrolled ``RNNCell`` and the sine-wave example (two
``LSTMCell``s over 60 steps, float64, Adam) train a few steps beside torch. Fusion cuts the chain
into kernels of at most ``MAX_KERNEL_NODES`` nodes (Numba's compile time grows faster than
linearly with a function's length); the cut pieces repeat, so the 10,000-deep chain compiles a
handful of distinct kernels. Cold (empty kernel cache) the numba_cpu cases compile for about a
minute in all; warm each runs in a few seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
from fusegrad.ir import ops
from fusegrad.ir.fusion_decisions import RefusalRule
from fusegrad.ir.graph import Graph, format_graph
from fusegrad.ir.key import structural_key
from fusegrad.ir.passes import optimize
from fusegrad.ir.passes.fuse import MAX_KERNEL_NODES, fuse

DEPTH = 10_000


def chain(lib, x):
    """``DEPTH`` elementwise ops whose gradient stays near 1e-2: a scaled shift, then a small
    sine correction (float32 ``sin`` is a libm call, cheap to compile, unlike the inlined tanh)."""
    for i in range(DEPTH // 2):
        x = x * 1.0001 + 0.001 if i % 2 == 0 else x - 0.001 * lib.sin(x)
    return x


def torch_chain(x0: np.ndarray) -> tuple[float, np.ndarray]:
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    loss = chain(torch, x).sum()
    loss.backward()
    return loss.item(), x.grad.numpy()


X0 = np.linspace(-1, 1, 8, dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_10000_deep_chain_forward_and_backward(backend: str) -> None:
    want_loss, want_grad = torch_chain(X0)
    with using_backend(backend):
        x = fg.tensor(X0, requires_grad=True)
        loss = chain(fg, x).sum()
        loss.backward()
        np.testing.assert_allclose(loss.item(), want_loss, rtol=1e-4)
        np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_10000_deep_chain_under_compile(backend: str) -> None:
    def step(x):
        loss = chain(fg, x).sum()
        loss.backward()
        return loss

    compiled = fg.compile(step)
    with using_backend(backend):
        for x0 in (X0, X0[::-1].copy()):  # the trace, then a replay
            want_loss, want_grad = torch_chain(x0)
            x = fg.tensor(x0, requires_grad=True)
            np.testing.assert_allclose(compiled(x).item(), want_loss, rtol=1e-4)
            np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-3)


def test_a_compiled_deep_forward_differentiates_outside() -> None:
    """The replay's lazy autograd history (``LazySource``) of a deep forward, built at backward.
    On the interpreter: the history is backend-independent, and on numba_cpu this program cuts
    into ~110 distinct kernels (3 minutes cold)."""
    forward = fg.compile(lambda x: chain(fg, x))
    want_loss, want_grad = torch_chain(X0)
    with using_backend("interpreter"):
        for _ in range(2):
            x = fg.tensor(X0, requires_grad=True)
            loss = forward(x).sum()
            loss.backward()
            np.testing.assert_allclose(loss.item(), want_loss, rtol=1e-4)
            np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-3)


def test_passes_key_printer_and_fusion_walk_a_deep_graph() -> None:
    x = fg.tensor(X0, requires_grad=True)
    loss = chain(fg, x).sum()
    loss.backward()
    graph = Graph((loss.node, x.grad.node))
    key, leaves = structural_key(list(graph.outputs))
    assert leaves and len(key) > DEPTH
    assert len(format_graph(graph).splitlines()) > DEPTH
    optimized, _ = optimize(graph)
    schedule = fuse(optimized)
    sizes = [len(k.body) for k in schedule.kernels]
    assert max(sizes) == MAX_KERNEL_NODES and sum(sizes) > 2 * DEPTH


def test_fusion_cuts_a_long_chain_at_the_kernel_size_limit() -> None:
    x = ops.buffer(fg.tensor(X0).node.attrs[0])
    for _ in range(MAX_KERNEL_NODES + 10):
        x = ops.unary("exp", x)
    kernels = fuse(Graph((x,))).kernels
    assert [len(k.body) for k in kernels] == [MAX_KERNEL_NODES, 10]
    assert any(r.rule is RefusalRule.KERNEL_SIZE for d in kernels[1].decisions for r in d.refusals)


def _rnn_step(lib, cell, head, opt, x):
    opt.zero_grad()
    h = lib.zeros(3, 4)
    for t in range(x.shape[0]):
        h = cell(x[t], h)
    loss = head(h).pow(2).mean()
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_500_step_unrolled_rnn_trains_like_torch(backend: str, compiled: bool) -> None:
    torch.manual_seed(0)
    t_cell, t_head = torch.nn.RNNCell(2, 4), torch.nn.Linear(4, 1)
    cell, head = fg.nnlib.RNNCell(2, 4), fg.nnlib.Linear(4, 1)
    for ours, ref in ((cell, t_cell), (head, t_head)):
        ours.load_state_dict({k: v.detach().numpy().copy() for k, v in ref.state_dict().items()})
    t_opt = torch.optim.SGD([*t_cell.parameters(), *t_head.parameters()], lr=0.1)
    opt = fg.optimlib.SGD([*cell.parameters(), *head.parameters()], lr=0.1)
    x = np.random.default_rng(0).standard_normal((500, 3, 2)).astype(np.float32)
    def step(x):
        return _rnn_step(fg, cell, head, opt, x)

    step = fg.compile(step) if compiled else step
    with using_backend(backend):
        for _ in range(3):
            want = _rnn_step(torch, t_cell, t_head, t_opt, torch.from_numpy(x)).item()
            got = step(fg.from_numpy(x)).item()
            np.testing.assert_allclose(got, want, rtol=1e-4)
        np.testing.assert_allclose(cell.weight_hh.detach().numpy(), t_cell.weight_hh.detach().numpy(),
                                   rtol=1e-4, atol=1e-6)


def _sequence(lib):
    """The sine-wave prediction example: two LSTMCells and a Linear head, unrolled in Python."""
    nn = torch.nn if lib is torch else fg.nnlib

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, 51)
            self.lstm2 = nn.LSTMCell(51, 51)
            self.linear = nn.Linear(51, 1)

        def forward(self, x):
            h, c, h2, c2 = (lib.zeros(x.shape[0], 51, dtype=lib.float64) for _ in range(4))
            outputs = []
            for x_t in x.split(1, dim=1):
                h, c = self.lstm1(x_t, (h, c))
                h2, c2 = self.lstm2(h, (h2, c2))
                outputs.append(self.linear(h2))
            return lib.cat(outputs, dim=1)

    return Sequence().double()


def _sine_step(model, opt, loss_fn, x, y):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_sine_wave_lstm_trains_like_torch(backend: str, compiled: bool) -> None:
    t = np.arange(61) + np.random.default_rng(0).integers(-80, 80, (4, 1))
    data = np.sin(t / 20.0)
    x, y = data[:, :-1], data[:, 1:]
    torch.manual_seed(0)
    ref = _sequence(torch)
    ours = _sequence(fg)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in ref.state_dict().items()})
    t_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    opt = fg.optimlib.Adam(ours.parameters(), lr=0.01)
    def step(x, y):
        return _sine_step(ours, opt, fg.nnlib.MSELoss(), x, y)

    step = fg.compile(step) if compiled else step
    with using_backend(backend):
        for _ in range(3):
            want = _sine_step(ref, t_opt, torch.nn.MSELoss(), torch.from_numpy(x),
                              torch.from_numpy(y)).item()
            got = step(fg.from_numpy(x), fg.from_numpy(y)).item()
            np.testing.assert_allclose(got, want, rtol=1e-10)
