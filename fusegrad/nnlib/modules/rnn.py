"""Recurrent layers: RNN, LSTM and GRU (multi-layer, bidirectional) and their one-step cells.

The time loop runs in Python and unrolls into the graph, so one realization computes the whole
sequence (and its backward) as one program. Per layer and direction, the input projection of
every time step is ONE matmul before the loop, with the biases folded in (their gradients are
then one reduction, not one per step); each step is one matmul ``h @ W_hh^T`` plus elementwise
gate math that fuses into one kernel. Gate order and parameter names follow torch.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np

from ...tracer import functions as F
from ...tracer import recurrent
from ...tracer.creation import buffer_tensor, empty, zeros
from ...tracer.provenance import user_location
from ...tracer.tensor import Tensor
from .. import functional as NF
from .. import functional_seq as FS
from .. import init
from ..module import Module
from ..parameter import Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---------------------------------------------------------------------------- one step
@functools.lru_cache(maxsize=32)
def _lstm_gate_constants(hidden: int, dtype: str) -> tuple[Tensor, Tensor]:
    """Per-column (half, offset) of ``tracer.recurrent.lstm_update``: (0.5, 0.5) on the sigmoid gates
    i, f, o, (1, 0) on g. Kept per size: an ``LSTMCell`` unrolled in Python reads the same two
    leaves at every step rather than two new ones (a graph of 60 steps had 240 more program
    inputs)."""
    sigmoid_columns = np.repeat(np.array([True, True, False, True]), hidden)
    half = np.where(sigmoid_columns, 0.5, 1.0).astype(dtype)
    offset = np.where(sigmoid_columns, 0.5, 0.0).astype(dtype)
    return buffer_tensor(half), buffer_tensor(offset)


# ---------------------------------------------------------------------------- layers
class RNNBase(Module):
    """Shared parameters, checks and time loop of RNN, LSTM and GRU.

    Parameters per layer ``k`` and direction (suffix ``_reverse`` for the backward one), as in
    torch: ``weight_ih_lk`` (gates*hidden, layer input), ``weight_hh_lk`` (gates*hidden,
    hidden), ``bias_ih_lk``, ``bias_hh_lk`` and, for an LSTM with ``proj_size``,
    ``weight_hr_lk`` (proj_size, hidden). All start as U(-1/sqrt(hidden), 1/sqrt(hidden)).
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        self.mode = mode
        name = self._layer_name()
        for what, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                FS.fail(name, f"{what} must be a positive int, got {value!r}", ValueError)
        FS.check_dropout_p(name, dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        if proj_size < 0 or (proj_size and mode != "LSTM") or proj_size >= hidden_size:
            FS.fail(name, f"proj_size must be 0, or (LSTM only) between 1 and hidden_size-1 "
                    f"({hidden_size - 1}), got {proj_size}", ValueError)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, proj_size
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size or hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(self._directions):
                layer_input = input_size if layer == 0 else real_hidden * self._directions
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                names = []
                for base, shape in shapes:
                    setattr(self, base + suffix,
                            Parameter(empty(*shape, dtype=dtype, device=device)))
                    names.append(base + suffix)
                self._flat_weights_names += names
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _layer_name(self) -> str:
        return type(self).__name__

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """A no-op (torch compacts cuDNN weights here); kept so ported code runs unchanged."""

    @property
    def all_weights(self) -> list[list[Parameter]]:
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    # ------------------------------------------------------------------ checks
    def _check_input(self, input: Tensor) -> tuple[Tensor, bool]:
        name = self._layer_name()
        if not isinstance(input, Tensor):
            FS.fail(name, f"input must be a Tensor, got {type(input).__name__}", TypeError)
        if input.ndim not in (2, 3):
            FS.fail(name, f"input must have 3 dimensions (batched) or 2 (unbatched), got "
                    f"{input.ndim} (shape {list(input.shape)})")
        if not input.dtype.is_floating_point:
            FS.fail(name, f"input must be a floating point tensor, got {input.dtype.name}",
                    TypeError)
        if input.shape[-1] != self.input_size:
            FS.fail(name, f"input has {input.shape[-1]} features (shape {list(input.shape)}) "
                    f"but input_size is {self.input_size}")
        weight = self.all_weights[0][0].dtype.name
        if input.dtype.name != weight:
            FS.fail(name, f"input dtype ({input.dtype.name}) does not match weight dtype "
                    f"({weight}). Convert input: input.to({weight}), or convert model: "
                    f"model.to({input.dtype.name})", ValueError)
        batched = input.ndim == 3
        time_dim = 1 if self.batch_first and batched else 0
        if input.shape[time_dim] == 0:
            FS.fail(name, f"input has an empty sequence (shape {list(input.shape)})")
        return input if batched else F.unsqueeze(input, 1), batched

    def _check_state(self, state: Tensor, what: str, size: int, batch: int,
                     batched: bool) -> Tensor:
        name = self._layer_name()
        layers = self.num_layers * self._directions
        want = [layers, batch, size] if batched else [layers, size]
        if not isinstance(state, Tensor):
            FS.fail(name, f"{what} must be a Tensor, got {type(state).__name__}", TypeError)
        if list(state.shape) != want:
            kind = "(num_layers*num_directions, batch, " if batched else \
                "(num_layers*num_directions, "
            FS.fail(name, f"{what} must have shape {want} {kind}"
                    f"{'proj_size' if size == self.proj_size else 'hidden_size'}) for "
                    f"{'batched 3-D' if batched else 'unbatched 2-D'} input, got "
                    f"{list(state.shape)}")
        return state if batched else F.unsqueeze(state, 1)

    def _initial_states(self, hx: Any, batch: int, batched: bool, dtype: str
                        ) -> list[tuple[Tensor, ...]]:
        """Per (layer, direction): (h,) or (h, c), each (batch, size)."""
        name = self._layer_name()
        layers = self.num_layers * self._directions
        sizes = [self.proj_size or self.hidden_size]
        whats = ["h_0"]
        if self.mode == "LSTM":
            sizes.append(self.hidden_size)
            whats.append("c_0")
        if hx is None:
            return [tuple(zeros(batch, s, dtype=dtype) for s in sizes)] * layers
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                FS.fail(name, f"hx must be a tuple (h_0, c_0), got {type(hx).__name__}",
                        TypeError)
            given = list(hx)
        else:
            given = [hx]
        full = [self._check_state(s, w, size, batch, batched)
                for s, w, size in zip(given, whats, sizes)]
        return [tuple(F.reshape(F.slice_dim(s, 0, i, i + 1), s.shape[1:]) for s in full)
                for i in range(layers)]

    # ------------------------------------------------------------------ forward
    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        x, batched = self._check_input(input)
        time_dim = 1 if self.batch_first and batched else 0
        batch = x.shape[1 - time_dim]
        states = self._initial_states(hx, batch, batched, x.dtype.name)
        finals: list[tuple[Tensor, ...]] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._directions):
                index = layer * self._directions + direction
                seq, final = self._run_direction(x, self.all_weights[index], states[index],
                                                 time_dim, reverse=direction == 1,
                                                 zero_start=hx is None)
                outputs.append(seq)
                finals.append(final)
            x = outputs[0] if len(outputs) == 1 else F.cat(outputs, -1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = NF.dropout(x, self.dropout)
        h_n = F.stack([f[0] for f in finals])
        c_n = F.stack([f[1] for f in finals]) if self.mode == "LSTM" else None
        if not batched:
            x, h_n = F.squeeze(x, 1), F.squeeze(h_n, 1)
            c_n = F.squeeze(c_n, 1) if c_n is not None else None
        return x, ((h_n, c_n) if c_n is not None else h_n)

    def _run_direction(self, x: Tensor, weights: list[Parameter], state: tuple[Tensor, ...],
                       time_dim: int, reverse: bool, zero_start: bool = False
                       ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The hidden state at every step (in time order, stacked on ``time_dim``), and the last
        state, of one layer in one direction (``zero_start``: the initial state is zeros).

        The time loop builds its nodes directly (``tracer.recurrent``): the checks ran."""
        w_ih, w_hh = weights[0], weights[1]
        b_ih, b_hh = (weights[2], weights[3]) if self.bias else (None, None)
        w_hr = weights[-1] if self.proj_size else None
        hidden = self.hidden_size
        loc = user_location()
        # every step's input projection at once, with the biases that are not gated folded in
        x_proj = F.matmul(x, F.t(w_ih))
        if self.mode == "GRU":
            # r, z and n apart from the start: each step's input gradients then land in two
            # stacked tensors instead of being padded together at every step
            x_parts = list(F.split(x_proj, [2 * hidden, hidden], -1))
        else:
            x_parts = [x_proj]
        b_hn = None
        if b_ih is not None:
            if self.mode == "GRU":
                b_ih_rz, b_in = F.split(b_ih, [2 * hidden, hidden])
                b_hh_rz, b_hn = F.split(b_hh, [2 * hidden, hidden])
                x_parts = [x_parts[0] + (b_ih_rz + b_hh_rz), x_parts[1] + b_in]
            else:
                x_parts = [x_proj + (b_ih + b_hh)]
        length = x.shape[time_dim]
        # the tensors the steps read: what the outputs' requires_grad comes from
        used: list[Tensor] = [*x_parts, *state]
        if length > 1 or not zero_start:
            used.append(w_hh)
        if w_hr is not None:
            used.append(w_hr)
        if b_hn is not None:
            used.append(b_hn)
        constants = _lstm_gate_constants(hidden, x.dtype.name) if self.mode == "LSTM" else ()
        return recurrent.run_direction(self.mode, x_parts, state, w_hh, w_hr, b_hn, constants,
                                       time_dim, reverse, zero_start, used, loc)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    ``forward(input, h_0=None)`` returns ``(output, h_n)`` with torch's shapes: input (L, N,
    input_size) or (N, L, input_size) with ``batch_first``, or unbatched (L, input_size);
    output (L, N, D*hidden_size); h_0/h_n (D*num_layers, N, hidden_size), D = 2 if
    bidirectional.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
                 dtype: Any = None):
        if nonlinearity not in ("tanh", "relu"):
            FS.fail("RNN", f"unknown nonlinearity {nonlinearity!r}: expected 'tanh' or 'relu'",
                    ValueError)
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)


class LSTM(RNNBase):
    """Long short-term memory, gates i, f, g, o as in torch.

    ``forward(input, (h_0, c_0)=None)`` returns ``(output, (h_n, c_n))``; with ``proj_size``
    the hidden state is projected to proj_size features (``weight_hr_l*``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: Any = None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit, gates r, z, n with ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``
    and ``h' = (1 - z) * n + z * h``. ``forward(input, h_0=None)`` returns ``(output, h_n)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# ---------------------------------------------------------------------------- cells
class RNNCellBase(Module):
    """One time step: parameters ``weight_ih`` (gates*hidden, input), ``weight_hh``,
    ``bias_ih``, ``bias_hh``, all U(-1/sqrt(hidden), 1/sqrt(hidden))."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = Parameter(empty(num_chunks * hidden_size, input_size, dtype=dtype,
                                         device=device))
        self.weight_hh = Parameter(empty(num_chunks * hidden_size, hidden_size, dtype=dtype,
                                         device=device))
        if bias:
            self.bias_ih = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _check(self, input: Tensor, states: tuple[Tensor | None, ...]
               ) -> tuple[Tensor, list[Tensor], bool]:
        """Batched input and states (zeros where None), and whether the input was batched."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            FS.fail(name, f"input must be a Tensor, got {type(input).__name__}", TypeError)
        if input.ndim not in (1, 2):
            FS.fail(name, f"input must have 2 dimensions (batched) or 1 (unbatched), got "
                    f"{input.ndim} (shape {list(input.shape)})")
        if input.shape[-1] != self.input_size:
            FS.fail(name, f"input has {input.shape[-1]} features (shape {list(input.shape)}) "
                    f"but input_size is {self.input_size}")
        batched = input.ndim == 2
        x = input if batched else F.unsqueeze(input, 0)
        want = [x.shape[0], self.hidden_size] if batched else [self.hidden_size]
        out = []
        for i, s in enumerate(states):
            if s is None:
                out.append(zeros(x.shape[0], self.hidden_size, dtype=x.dtype.name))
                continue
            if not isinstance(s, Tensor) or list(s.shape) != want:
                got = list(s.shape) if isinstance(s, Tensor) else type(s).__name__
                FS.fail(name, f"hidden state {i} must have shape {want} for "
                        f"{'batched' if batched else 'unbatched'} input, got {got}")
            out.append(s if batched else F.unsqueeze(s, 0))
        return x, out, batched

    def _step(self, mode: str, x: Tensor, state: tuple[Tensor, ...], loc: str | None
              ) -> tuple[Tensor, ...]:
        """The cell's step on the checked, batched ``x`` and ``state``."""
        constants = _lstm_gate_constants(self.hidden_size, x.dtype.name) if mode == "LSTM" \
            else ()
        memo = self.__dict__.get("_cell_nodes")
        if memo is None:
            memo = recurrent.CellNodes()
            object.__setattr__(self, "_cell_nodes", memo)
        return recurrent.cell(mode, x, state, self.weight_ih, self.weight_hh, self.bias_ih,
                              self.bias_hh, constants, self._used(x, *state), loc, memo)

    def _used(self, *tensors: Tensor) -> list[Tensor]:
        """``tensors`` and the parameters: what a step's outputs require grad from."""
        if self._modules:
            return [*tensors, *self.parameters()]
        return [*tensors, *(p for p in self._parameters.values() if p is not None)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        if nonlinearity != "tanh":
            s += f", nonlinearity={nonlinearity!r}"
        return s


def _unbatch(t: Tensor, batched: bool) -> Tensor:
    return t if batched else F.squeeze(t, 0)


class RNNCell(RNNCellBase):
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``; ``forward(input, hx=None)`` -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None, dtype: Any = None):
        if nonlinearity not in ("tanh", "relu"):
            FS.fail("RNNCell", f"unknown nonlinearity {nonlinearity!r}: expected 'tanh' or "
                    "'relu'", ValueError)
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        loc = user_location()
        x, (h,), batched = self._check(input, (hx,))
        mode = "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"
        return _unbatch(self._step(mode, x, (h,), loc)[0], batched)


class LSTMCell(RNNCellBase):
    """One LSTM step; ``forward(input, (h, c)=None)`` -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            FS.fail("LSTMCell", f"hx must be a tuple (h, c), got {type(hx).__name__}",
                    TypeError)
        loc = user_location()
        x, (h, c), batched = self._check(input, tuple(hx) if hx is not None else (None, None))
        h_next, c_next = self._step("LSTM", x, (h, c), loc)
        return _unbatch(h_next, batched), _unbatch(c_next, batched)


class GRUCell(RNNCellBase):
    """One GRU step; ``forward(input, hx=None)`` -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        loc = user_location()
        x, (h,), batched = self._check(input, (hx,))
        return _unbatch(self._step("GRU", x, (h,), loc)[0], batched)
