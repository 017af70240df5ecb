"""The recurrent layers build their time steps as nodes (tracer/recurrent.py): the graph
must be the one the same steps written with Tensor ops build, node for node.

The oracle below is the Tensor-level code the layers ran before: nodes are hash-consed, so two
graphs of the same structure are the same objects, and ``is`` compares them whole.
"""
from __future__ import annotations

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.ir.graph import toposort
from fusegrad.ir.key import structural_key
from fusegrad.ir.macro import expand_macros
from fusegrad.nnlib.modules import rnn
from fusegrad.nnlib.modules.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from fusegrad.tracer import functions as F
from fusegrad.tracer.creation import zeros
from fusegrad.tracer.tensor import Tensor


# ---------------------------------------------------------------------------- the oracle
def _sigmoid(x: Tensor) -> Tensor:
    return F.tanh(x * 0.5) * 0.5 + 0.5


def _activation(mode: str, x: Tensor) -> Tensor:
    return F.relu(x) if mode == "RNN_RELU" else F.tanh(x)


def _lstm_update(gates: Tensor, c: Tensor, half: Tensor, offset: Tensor):
    i, f, g, o = F.chunk(F.tanh(gates * half) * half + offset, 4, -1)
    c = f * c + i * g
    return o * F.tanh(c), c


def _gru_update(x_rz, x_n, h_gates, h, b_hn):
    hidden = h.shape[-1]
    h_rz, h_n = F.split(h_gates, [2 * hidden, hidden], -1)
    r, z = F.chunk(_sigmoid(x_rz + h_rz), 2, -1)
    n = F.tanh(x_n + r * (h_n + b_hn if b_hn is not None else h_n))
    return n + z * (h - n)


def _run_direction(self, x, weights, state, time_dim, reverse, zero_start=False):
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if self.bias else (None, None)
    w_hr = weights[-1] if self.proj_size else None
    hidden = self.hidden_size
    x_proj = F.matmul(x, F.t(w_ih))
    x_parts = list(F.split(x_proj, [2 * hidden, hidden], -1)) if self.mode == "GRU" \
        else [x_proj]
    b_hn = None
    if b_ih is not None:
        if self.mode == "GRU":
            b_ih_rz, b_in = F.split(b_ih, [2 * hidden, hidden])
            b_hh_rz, b_hn = F.split(b_hh, [2 * hidden, hidden])
            x_parts = [x_parts[0] + (b_ih_rz + b_hh_rz), x_parts[1] + b_in]
        else:
            x_parts = [x_proj + (b_ih + b_hh)]
    w_hh_t = F.t(w_hh)
    w_hr_t = F.t(w_hr) if w_hr is not None else None
    length, batch = x.shape[time_dim], x.shape[1 - time_dim]
    gates_shape = (batch, w_hh.shape[0])
    constants = rnn._lstm_gate_constants(hidden, x.dtype.name) if self.mode == "LSTM" else ()
    hs = [None] * length
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        x_t = [F.reshape(F.slice_dim(part, time_dim, t, t + 1), (batch, part.shape[-1]))
               for part in x_parts]
        h = state[0]
        h_gates = zeros(*gates_shape, dtype=h.dtype.name) if zero_start else F.matmul(h, w_hh_t)
        zero_start = False
        if self.mode == "LSTM":
            h, c = _lstm_update(x_t[0] + h_gates, state[1], *constants)
            if w_hr_t is not None:
                h = F.matmul(h, w_hr_t)
            state = (h, c)
        elif self.mode == "GRU":
            state = (_gru_update(x_t[0], x_t[1], h_gates, h, b_hn),)
        else:
            state = (_activation(self.mode, x_t[0] + h_gates),)
        hs[t] = state[0]
    return F.stack(hs, time_dim), state


def _gates(self, x, h):
    x_gates = F.matmul(x, F.t(self.weight_ih))
    h_gates = F.matmul(h, F.t(self.weight_hh))
    if self.bias:
        x_gates, h_gates = x_gates + self.bias_ih, h_gates + self.bias_hh
    return x_gates, h_gates


def _rnn_cell(self, input, hx=None):
    x, (h,), batched = self._check(input, (hx,))
    x_gates, h_gates = _gates(self, x, h)
    mode = "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"
    return rnn._unbatch(_activation(mode, x_gates + h_gates), batched)


def _lstm_cell(self, input, hx=None):
    x, (h, c), batched = self._check(input, tuple(hx) if hx is not None else (None, None))
    x_gates, h_gates = _gates(self, x, h)
    h, c = _lstm_update(x_gates + h_gates, c,
                        *rnn._lstm_gate_constants(self.hidden_size, x.dtype.name))
    return rnn._unbatch(h, batched), rnn._unbatch(c, batched)


def _gru_cell(self, input, hx=None):
    x, (h,), batched = self._check(input, (hx,))
    x_gates, h_gates = _gates(self, x, h)
    x_rz, x_n = F.split(x_gates, [2 * self.hidden_size, self.hidden_size], -1)
    return rnn._unbatch(_gru_update(x_rz, x_n, h_gates, h, None), batched)


ORACLE = {RNNCell: _rnn_cell, LSTMCell: _lstm_cell, GRUCell: _gru_cell}


# ---------------------------------------------------------------------------- the checks
def _flat(result) -> list[Tensor]:
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in _flat(r)]
    return [result]


def _both(layer, monkeypatch, *args) -> tuple[list[Tensor], list[Tensor]]:
    """The layer's outputs, then the oracle's for the same call."""
    new = _flat(layer(*args))
    with monkeypatch.context() as m:
        if isinstance(layer, rnn.RNNBase):
            m.setattr(rnn.RNNBase, "_run_direction", _run_direction)
        else:
            m.setattr(type(layer), "forward", ORACLE[type(layer)])
        old = _flat(layer(*args))
    return new, old


def _same_graphs(new: list[Tensor], old: list[Tensor]) -> None:
    """The same nodes, once the layers' macro nodes are expanded (``ir/macro.py``)."""
    assert len(new) == len(old)
    expanded = expand_macros([t.node for t in new])
    for k, (a, b) in enumerate(zip(new, old)):
        assert expanded[k] is b.node, f"output {k}: the graphs differ"
        assert a.requires_grad == b.requires_grad, f"output {k}: requires_grad"


def _same_structure(new: list[Tensor], old: list[Tensor]) -> None:
    """The same graphs up to which leaves they read: under ``no_grad`` each read of a parameter
    is a new detached leaf."""
    assert structural_key(expand_macros([t.node for t in new]))[0] == \
        structural_key([t.node for t in old])[0]
    assert not any(t.requires_grad for t in new + old)


LAYER_CASES = [
    (RNN, {}), (RNN, {"nonlinearity": "relu", "bias": False}), (LSTM, {}),
    (LSTM, {"proj_size": 3}), (LSTM, {"bidirectional": True, "num_layers": 2}),
    (GRU, {}), (GRU, {"bias": False, "batch_first": True}),
    (GRU, {"bidirectional": True, "batch_first": True}),
]


@pytest.mark.parametrize("cls,kwargs", LAYER_CASES,
                         ids=[f"{c.__name__}-{k}" for c, k in LAYER_CASES])
@pytest.mark.parametrize("with_state", [False, True])
def test_layers_build_the_graph_of_their_tensor_steps(monkeypatch, cls, kwargs, with_state):
    layer = cls(4, 5, **kwargs)
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal((3, 2, 4)).astype(np.float32), requires_grad=True)
    args = [x]
    if with_state:
        d = (2 if kwargs.get("bidirectional") else 1) * kwargs.get("num_layers", 1)
        batch = 3 if kwargs.get("batch_first") else 2
        h0 = fg.tensor(rng.standard_normal((d, batch, kwargs.get("proj_size") or 5))
                       .astype(np.float32), requires_grad=True)
        c0 = fg.tensor(rng.standard_normal((d, batch, 5)).astype(np.float32))
        args.append((h0, c0) if cls is LSTM else h0)
    new, old = _both(layer, monkeypatch, *args)
    # each layer and direction's time loop is one macro node per output until compiled
    macros = [n for n in toposort([t.node for t in new]) if n.op == "macro"]
    directions = (2 if kwargs.get("bidirectional") else 1) * kwargs.get("num_layers", 1)
    assert len({n.inputs for n in macros}) == directions
    _same_graphs(new, old)


CELL_CASES = [(RNNCell, {}), (RNNCell, {"nonlinearity": "relu"}), (LSTMCell, {}),
              (LSTMCell, {"bias": False}), (GRUCell, {}), (GRUCell, {"bias": False})]


@pytest.mark.parametrize("cls,kwargs", CELL_CASES,
                         ids=[f"{c.__name__}-{k}" for c, k in CELL_CASES])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_build_the_graph_of_their_tensor_steps(monkeypatch, cls, kwargs, batched):
    cell = cls(4, 5, **kwargs)
    rng = np.random.default_rng(1)
    shape = (2,) if batched else ()
    x = fg.tensor(rng.standard_normal(shape + (4,)).astype(np.float32))
    h = fg.tensor(rng.standard_normal(shape + (5,)).astype(np.float32))
    state = (h, fg.zeros(*shape, 5)) if cls is LSTMCell else h
    _same_graphs(*_both(cell, monkeypatch, x, state))
    _same_graphs(*_both(cell, monkeypatch, x))      # the zero state


def test_outputs_require_grad_only_from_what_the_steps_read(monkeypatch):
    """A frozen layer on an input without grad gives outputs without grad; a single step from a
    zero state never reads ``weight_hh``, so that weight alone gives none either."""
    layer = LSTM(4, 5)
    for p in layer.parameters():
        p.requires_grad_(False)
    x = fg.tensor(np.ones((1, 2, 4), np.float32))
    _same_graphs(*_both(layer, monkeypatch, x))
    layer.weight_hh_l0.requires_grad_(True)
    new, old = _both(layer, monkeypatch, x)
    _same_graphs(new, old)
    assert not any(t.requires_grad for t in new)
    layer.weight_ih_l0.requires_grad_(True)
    with fg.no_grad():
        _same_structure(*_both(layer, monkeypatch, fg.tensor(np.ones((3, 2, 4), np.float32))))


def test_cells_derive_their_parameter_nodes_anew_when_the_parameters_change(monkeypatch):
    """A cell keeps the nodes it derives from its parameters for its next call
    (``recurrent.CellNodes``): another batch size, a replaced weight, a frozen bias, ``no_grad``
    and a deep copy of the cell each get the graph their own parameters make."""
    import copy

    from fusegrad.nnlib.parameter import Parameter
    cell = LSTMCell(4, 5)
    rng = np.random.default_rng(2)

    def check(c, batch):
        x = fg.tensor(rng.standard_normal((batch, 4)).astype(np.float32))
        h = fg.tensor(rng.standard_normal((batch, 5)).astype(np.float32))
        _same_graphs(*_both(c, monkeypatch, x, (h, fg.zeros(batch, 5))))

    check(cell, 2)
    check(cell, 2)
    check(cell, 3)
    cell.weight_ih = Parameter(fg.tensor(rng.standard_normal((20, 4)).astype(np.float32)))
    check(cell, 3)
    cell.bias_hh.requires_grad_(False)
    check(cell, 3)
    with fg.no_grad():
        x = fg.tensor(np.ones((3, 4), np.float32))
        _same_structure(*_both(cell, monkeypatch, x))
    twin = copy.deepcopy(cell)
    assert twin._cell_nodes.key is None
    check(twin, 3)
    ones = fg.tensor(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(twin(ones)[0].detach().numpy(),
                                  cell(ones)[0].detach().numpy())
