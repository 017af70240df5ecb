"""RNN, LSTM, GRU and their cells against torch.nn: outputs, final states and every gradient.

Each check builds the torch layer, copies its initialized parameters into the fusegrad layer
through ``load_state_dict`` (so the state-dict names are checked too), runs both on the same
inputs and backpropagates ``sum(out * r)`` over every output for fixed random ``r``. Sizes are
tiny: every numba_cpu case compiles its kernels once (the disk cache makes reruns fast).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
from fusegrad.ir.errors import ShapeError
from fusegrad.ir.graph import Graph
from fusegrad.ir.passes import optimize
from fusegrad.ir.passes.fuse import fuse
from fusegrad.nnlib.modules.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

RTOL = ATOL = 1e-5
LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU, "RNNCell": RNNCell, "LSTMCell": LSTMCell,
          "GRUCell": GRUCell}


def _pair(kind: str, **kwargs):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(**kwargs)
    ours = LAYERS[kind](**kwargs)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in ref.state_dict().items()})
    return ref, ours


def _flat(result) -> list:
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in _flat(r)]
    return [result]


def _close(what: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


def check_parity(ref, ours, inputs: list[np.ndarray], call, backend: str, seed: int = 0) -> None:
    """``call(layer, *inputs)`` in both libraries: outputs, input and parameter gradients."""
    th_in = [torch.tensor(a, requires_grad=True) for a in inputs]
    with using_backend(backend):
        fg_in = [fg.tensor(a, requires_grad=True) for a in inputs]
        th_out, fg_out = _flat(call(ref, *th_in)), _flat(call(ours, *fg_in))
        assert len(th_out) == len(fg_out)
        rng = np.random.default_rng(seed)
        th_loss, fg_loss = 0, 0
        for i, (got, want) in enumerate(zip(fg_out, th_out)):
            assert tuple(got.shape) == tuple(want.shape), f"output {i}: shape"
            _close(f"output {i}", got.detach().numpy(), want.detach().numpy())
            r = rng.standard_normal(tuple(want.shape)).astype(np.float32)
            th_loss = th_loss + (want * torch.tensor(r)).sum()
            fg_loss = fg_loss + (got * fg.tensor(r)).sum()
        th_loss.backward()
        fg_loss.backward()
        for i, (got, want) in enumerate(zip(fg_in, th_in)):
            _close(f"grad of input {i}", got.grad.numpy(), want.grad.numpy())
        ours_params = dict(ours.named_parameters())
        for name, p in ref.named_parameters():
            _close(f"grad of {name}", ours_params[name].grad.numpy(), p.grad.numpy())


def _states(kind: str, layers: int, batch: int | None, hidden: int, rng, proj: int = 0):
    lead = (layers,) if batch is None else (layers, batch)
    h = rng.standard_normal(lead + (proj or hidden,)).astype(np.float32)
    c = rng.standard_normal(lead + (hidden,)).astype(np.float32)
    return [h, c] if kind == "LSTM" else [h]


def _forward(kind: str, with_state: bool):
    def call(layer, x, *states):
        if not with_state:
            return layer(x)
        return layer(x, tuple(states) if kind == "LSTM" else states[0])
    return call


# (kwargs, batched, with initial state)
CONFIGS = {
    "2layers_seqfirst": ({"num_layers": 2}, True, False),
    "2layers_batchfirst_bidir_h0": ({"num_layers": 2, "batch_first": True,
                                     "bidirectional": True}, True, True),
    "2layers_seqfirst_bidir": ({"num_layers": 2, "bidirectional": True}, True, False),
    "unbatched_bidir_h0": ({"num_layers": 2, "bidirectional": True, "batch_first": True},
                           False, True),
    "no_bias_h0": ({"bias": False, "batch_first": True}, True, True),
}
KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]


# numba_cpu compiles every new kernel (~0.1-0.5 s each, unrolled steps differ by offsets), so
# it runs the two configs that cover the most paths; the interpreter runs them all.
NUMBA_CONFIGS = ("2layers_batchfirst_bidir_h0", "no_bias_h0")
LAYER_CASES = [pytest.param(c, "interpreter", id=f"{c}-interpreter") for c in CONFIGS] + \
    [pytest.param(c, "numba_cpu", id=f"{c}-numba_cpu", marks=pytest.mark.numba)
     for c in NUMBA_CONFIGS]


@pytest.mark.parametrize("config,backend", LAYER_CASES)
@pytest.mark.parametrize("kind,extra", KINDS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_layer_matches_torch(kind, extra, config, backend):
    kwargs, batched, with_state = CONFIGS[config]
    seq, batch, features, hidden = 3, 2, 3, 4
    ref, ours = _pair(kind, input_size=features, hidden_size=hidden, **kwargs, **extra)
    rng = np.random.default_rng(1)
    directions = 2 if kwargs.get("bidirectional") else 1
    shape = (seq, features) if not batched else \
        (batch, seq, features) if kwargs.get("batch_first") else (seq, batch, features)
    inputs = [rng.standard_normal(shape).astype(np.float32)]
    if with_state:
        inputs += _states(kind, kwargs.get("num_layers", 1) * directions,
                          batch if batched else None, hidden, rng)
    check_parity(ref, ours, inputs, _forward(kind, with_state), backend)


@pytest.mark.numba
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_long_sequence_matches_torch_with_stacked_weight_gradients(kind):
    """From 8 time steps on, the recurrent weight's gradient is one product over the stacked
    steps and the gradient of the projected input one concat (ir/passes/fuse_sums.py)."""
    ref, ours = _pair(kind, input_size=3, hidden_size=4, num_layers=2)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((10, 2, 3)).astype(np.float32)]
    check_parity(ref, ours, inputs, _forward(kind, False), "numba_cpu")
    out, _ = ours(fg.tensor(inputs[0]))
    out.sum().backward()
    graph = Graph(tuple([out.node] + [p.grad.node for p in ours.parameters()]))
    rules = [d.rule for d in fuse(optimize(graph)[0]).decisions]
    assert rules.count("stacked-products") == 2  # W_hh of each layer
    assert rules.count("concat") >= 2


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_with_projection_matches_torch(backend):
    ref, ours = _pair("LSTM", input_size=3, hidden_size=5, proj_size=2, num_layers=2)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((3, 2, 3)).astype(np.float32)]
    inputs += _states("LSTM", 2, 2, 5, rng, proj=2)
    check_parity(ref, ours, inputs, _forward("LSTM", True), backend)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_parameter_names_shapes_and_init_match_torch(kind):
    kwargs = {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True}
    if kind == "LSTM":
        kwargs["proj_size"] = 2
    ref = getattr(torch.nn, kind)(**kwargs)
    ours = LAYERS[kind](**kwargs)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
    bound = 1 / math.sqrt(5)
    values = np.concatenate([p.detach().numpy().ravel() for p in ours.parameters()])
    assert np.all(np.abs(values) <= bound)
    assert abs(values.std() - bound / math.sqrt(3)) < 0.1 * bound  # U(-b, b) has std b/sqrt(3)
    assert repr(ours) == repr(ref)


def test_dropout_between_layers_is_identity_in_eval_mode():
    ref, ours = _pair("LSTM", input_size=3, hidden_size=4, num_layers=2, dropout=0.5)
    ref.eval()
    ours.eval()
    x = np.random.default_rng(3).standard_normal((3, 2, 3)).astype(np.float32)
    check_parity(ref, ours, [x], _forward("LSTM", False), "interpreter")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_between_layers_in_train_mode(backend):
    fg.manual_seed(0)
    layer = GRU(3, 4, num_layers=2, dropout=0.5, batch_first=True)
    x = fg.tensor(np.random.default_rng(4).standard_normal((2, 3, 3)).astype(np.float32))
    with using_backend(backend):
        fg.manual_seed(7)
        out_a, h_a = layer(x)
        fg.manual_seed(7)
        out_b, h_b = layer(x)
        out_c, _ = layer(x)  # the generator moved on: new masks
        layer.eval()
        out_eval, _ = layer(x)
        assert tuple(out_a.shape) == (2, 3, 4) and tuple(h_a.shape) == (2, 2, 4)
        a, b = out_a.detach().numpy(), out_b.detach().numpy()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(h_a.detach().numpy(), h_b.detach().numpy())
        assert not np.allclose(a, out_eval.detach().numpy())
        assert not np.allclose(a, out_c.detach().numpy())
        # gradients flow through the masked layers
        out_a.sum().backward()
        assert np.any(layer.weight_ih_l0.grad.numpy())


CELLS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
         ("GRUCell", {}), ("GRUCell", {"bias": False})]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("kind,extra", CELLS,
                         ids=["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_nobias"])
def test_cell_matches_torch(kind, extra, with_state, batched, backend):
    ref, ours = _pair(kind, input_size=3, hidden_size=4, **extra)
    rng = np.random.default_rng(5)
    lead = (2,) if batched else ()
    inputs = [rng.standard_normal(lead + (3,)).astype(np.float32)]
    if with_state:
        inputs += [rng.standard_normal(lead + (4,)).astype(np.float32)
                   for _ in range(2 if kind == "LSTMCell" else 1)]

    def call(cell, x, *states):
        if not states:
            return cell(x)
        return cell(x, tuple(states) if kind == "LSTMCell" else states[0])
    check_parity(ref, ours, inputs, call, backend)


def test_lstm_trains_with_sgd_like_torch():
    """Three SGD steps from the same start give the same loss trajectory as torch."""
    ref, ours = _pair("LSTM", input_size=3, hidden_size=4, num_layers=2, batch_first=True)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((2, 3, 3)).astype(np.float32), \
        rng.standard_normal((2, 4)).astype(np.float32)
    losses = []
    for lib, layer in ((torch, ref), (fg, ours)):
        run = []
        for _ in range(3):
            for p in layer.parameters():
                p.grad = None
            out = layer(lib.tensor(x))[0][:, -1]
            loss = ((out - lib.tensor(y)) ** 2).mean()
            loss.backward()
            with lib.no_grad():
                for p in layer.parameters():
                    p.sub_(p.grad * 0.5)
            run.append(loss.item())
        losses.append(run)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


# ---------------------------------------------------------------------------- fusion
def _kernels_and_externs(kind: str, length: int) -> tuple[int, int]:
    """Kernels and extern calls of forward + backward (fused, not compiled)."""
    fg.manual_seed(0)
    layer = LAYERS[kind](3, 4)
    out, _ = layer(fg.randn(length, 2, 3))
    out.sum().backward()
    graph = Graph(tuple([out.node] + [p.grad.node for p in layer.parameters()]))
    schedule = fuse(optimize(graph)[0])
    return len(schedule.kernels), len(schedule.externs)


@pytest.mark.parametrize("kind,kernels", [("RNN", 2), ("LSTM", 4), ("GRU", 5)])
def test_each_time_step_costs_few_kernels(kind, kernels):
    """One more step adds 3 matmuls (h @ W_hh^T, and its two VJPs) and fused gate kernels:
    forward 1 (RNN) or 2 (LSTM, GRU), backward 1 (RNN), 2 (LSTM) or 3 (GRU)."""
    k3, e3 = _kernels_and_externs(kind, 3)
    k4, e4 = _kernels_and_externs(kind, 4)
    assert e4 - e3 == 3
    assert k4 - k3 <= kernels


# ---------------------------------------------------------------------------- errors
def test_wrong_input_rank_names_layer_shape_and_line():
    layer = LSTM(3, 4)
    with pytest.raises(ShapeError) as info:
        layer(fg.zeros(1, 2, 3, 3))  # the line the error must name
    msg = str(info.value)
    assert "LSTM: input must have 3 dimensions (batched) or 2 (unbatched), got 4" in msg
    assert "[1, 2, 3, 3]" in msg and "test_rnn.py:" in msg


def test_wrong_feature_size_and_state_shape():
    layer = GRU(3, 4, num_layers=2)
    with pytest.raises(ShapeError, match="GRU: input has 5 features .* input_size is 3"):
        layer(fg.zeros(2, 2, 5))
    with pytest.raises(ShapeError, match=r"GRU: h_0 must have shape \[2, 2, 4\]"):
        layer(fg.zeros(2, 2, 3), fg.zeros(1, 2, 4))
    with pytest.raises(ShapeError, match=r"unbatched 2-D input, got \[2, 1, 4\]"):
        layer(fg.zeros(2, 3), fg.zeros(2, 1, 4))
    with pytest.raises(TypeError, match=r"LSTM: hx must be a tuple \(h_0, c_0\)"):
        LSTM(3, 4)(fg.zeros(2, 2, 3), fg.zeros(1, 2, 4))
    with pytest.raises(ShapeError, match="LSTMCell: input has 2 features"):
        LSTMCell(3, 4)(fg.zeros(2, 2))


def test_constructor_checks():
    with pytest.raises(ValueError, match="RNN: unknown nonlinearity 'gelu'"):
        RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        LSTM(3, 4, dropout=1.5)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        LSTM(3, 4, dropout=0.2)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(3, 4, proj_size=4)
