"""The time steps of the recurrent layers (``nn.RNN``/``LSTM``/``GRU`` and their cells), built
as IR nodes.

A recurrent layer unrolls its time loop into the graph: an LSTM over 35 steps and 2 layers
traces about 1,200 ops per forward. Each op traced through ``Tensor`` costs a user-line lookup,
a Tensor and its autograd flags (about 15 us); the same op built here as a node costs a few
microseconds. The layers (``nnlib/modules/rnn.py``) check their Tensors first, so nothing here
can meet bad input; every node carries the user's line that called the layer, as the Tensor
path would give it. Only the results become Tensors (``run_direction``, ``cell``). A layer's
whole time loop is one macro node per output (``ir/macro.py``), unrolled when a program is
compiled for it (``unroll``).

Each function builds exactly the nodes the Tensor expressions in its docstring would (the
tests compare the graphs node for node), so values, gradients, fusion and the program cache
see no difference.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..ir import ops
from ..ir.macro import macro, register
from ..ir.node import Node
from .device import node_device
from .functions import broadcast_node, node_of, wrap
from .tensor import Tensor


def split_columns(x: Node, sizes: list[int], loc: str | None) -> list[Node]:
    """``F.split(x, sizes, -1)`` of a 2-D ``x``."""
    out, start = [], 0
    rows = (0, x.shape[0], 1)
    for size in sizes:
        out.append(ops.slice_(x, (rows, (start, start + size, 1)), loc))
        start += size
    return out


def mul(a: Node, b: Node, loc: str | None) -> Node:
    """``a * b``, ``b`` broadcast to ``a``'s shape."""
    return ops.binary("mul", a, broadcast_node(b, a.shape, loc), loc)


def add(a: Node, b: Node, loc: str | None) -> Node:
    """``a + b``, ``b`` broadcast to ``a``'s shape."""
    return ops.binary("add", a, broadcast_node(b, a.shape, loc), loc)


def affine(x: Node, weight_t: Node, bias: Node | None, loc: str | None) -> Node:
    """``x @ weight_t (+ bias)``."""
    y = ops.matmul(x, weight_t, loc)
    return y if bias is None else add(y, bias, loc)


def sigmoid(x: Node, loc: str | None, half: Node | None = None) -> Node:
    """``tanh(x * 0.5) * 0.5 + 0.5``: 4 nodes instead of the 9 of the overflow-safe
    ``fusegrad.sigmoid`` (tanh saturates, so this is finite everywhere too) and a simpler
    backward. It differs from ``1/(1+exp(-x))`` by at most ~6e-8 (1 ulp of 1.0). ``half``: the
    constant 0.5 of ``x``'s shape, if the caller has it."""
    if half is None:
        half = ops.const(0.5, x.shape, x.dtype, loc)
    scaled = ops.binary("mul", ops.unary("tanh", ops.binary("mul", x, half, loc), loc), half, loc)
    return ops.binary("add", scaled, half, loc)


def activation(mode: str, x: Node, loc: str | None) -> Node:
    """``F.relu(x)`` for ``RNN_RELU``, else ``F.tanh(x)``."""
    if mode != "RNN_RELU":
        return ops.unary("tanh", x, loc)
    zero = ops.const(0, x.shape, x.dtype, loc)
    return ops.where(ops.binary("le", x, zero, loc), zero, x, loc)


def lstm_update(gates: Node, c: Node, half: Node, offset: Node, loc: str | None
                ) -> tuple[Node, Node]:
    """(h', c') from the pre-activations ``gates`` (N, 4H) in torch's order i, f, g, o.

    All four activations are one ``tanh(gates * half) * half + offset`` over the 4H columns
    (``half``, ``offset``: (0.5, 0.5) on the sigmoid gates i, f, o, (1, 0) on g), with one
    transcendental per element and one (N, 4H) kernel where the four gate gradients meet. Then
    ``c' = f * c + i * g`` and ``h' = o * tanh(c')``.
    """
    act = add(mul(ops.unary("tanh", mul(gates, half, loc), loc), half, loc), offset, loc)
    hidden = gates.shape[1] // 4
    i, f, g, o = split_columns(act, [hidden] * 4, loc)
    c = ops.binary("add", ops.binary("mul", f, c, loc), ops.binary("mul", i, g, loc), loc)
    return ops.binary("mul", o, ops.unary("tanh", c, loc), loc), c


def gru_update(x_rz: Node, x_n: Node, h_gates: Node, h: Node, b_hn: Node | None,
               loc: str | None, half: Node | None = None) -> Node:
    """h' from the input pre-activations of the r, z gates (N, 2H) and of n (N, H) and the
    hidden ones (N, 3H), in torch's order r, z, n: ``r, z = sigmoid(x_rz + h_rz)`` (one sigmoid
    for both), ``n = tanh(x_n + r * (h_n + b_hn))`` and ``h' = n + z * (h - n)``.

    The hidden part of n is gated by r, so its bias ``b_hn`` cannot be folded into the input
    projection like the others. ``half``: the sigmoid's constant, (N, 2H), if the caller has it.
    """
    hidden = h.shape[-1]
    h_rz, h_n = split_columns(h_gates, [2 * hidden, hidden], loc)
    r, z = split_columns(sigmoid(ops.binary("add", x_rz, h_rz, loc), loc, half),
                         [hidden, hidden], loc)
    gated = ops.binary("mul", r, add(h_n, b_hn, loc) if b_hn is not None else h_n, loc)
    n = ops.unary("tanh", ops.binary("add", x_n, gated, loc), loc)
    return ops.binary("add", n, ops.binary("mul", z, ops.binary("sub", h, n, loc), loc), loc)


def stack(nodes: list[Node], dim: int, loc: str | None) -> Node:
    """``F.stack(nodes, dim)``: each with a new axis ``dim``, padded into place and added."""
    parts = [ops.reshape(n, n.shape[:dim] + (1,) + n.shape[dim:], loc) for n in nodes]
    return ops.pads_sum(parts, dim, loc)


def _nodes(*tensors: Tensor | None) -> list[Node | None]:
    return [None if t is None else node_of(t) for t in tensors]


def run_direction(mode: str, x_parts: Sequence[Tensor], state: Sequence[Tensor], w_hh: Tensor,
                  w_hr: Tensor | None, b_hn: Tensor | None,
                  gate_constants: Sequence[Tensor], time_dim: int, reverse: bool,
                  zero_start: bool, used: Sequence[Tensor], loc: str | None
                  ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The time loop of one layer in one direction: the hidden state at every step (in time
    order, stacked on ``time_dim``) and the last state.

    The loop is recorded as macro nodes (``ir/macro.py``), one per output, and unrolled by
    ``unroll`` only when a program is compiled for it: tracing it costs a few microseconds
    instead of ~1,500 node constructions per LSTM forward, and the graph walks of
    ``backward()`` and of the program cache's key see 1 node where they saw 700 per layer.

    Args:
        mode: ``RNN_TANH``, ``RNN_RELU``, ``LSTM`` or ``GRU``.
        x_parts: every step's input pre-activations, (L, N, G) or (N, L, G) with ``time_dim``
            1: one part, or the GRU's r/z and n parts.
        state: (h,) or, for an LSTM, (h, c), each (N, size).
        w_hh, w_hr: the hidden weights and the LSTM projection (or None), as stored.
        b_hn: the GRU's hidden bias of n, gated by r (or None).
        gate_constants: the LSTM's (half, offset) columns of ``lstm_update``.
        zero_start: the initial state is zeros: the first step needs no product.
        used: the tensors the steps read, whose ``requires_grad`` the outputs take.
    """
    parts = _nodes(*x_parts)
    states = _nodes(*state)
    length = parts[0].shape[time_dim]
    reads_w_hh = length > 1 or not zero_start
    optional = [w_hh if reads_w_hh else None, w_hr, b_hn]
    constants = list(gate_constants) if mode == "LSTM" else []
    inputs = [*parts, *states, *_nodes(*(t for t in optional if t is not None)),
              *_nodes(*constants)]
    params = (mode, len(parts), len(states), tuple(t is not None for t in optional),
              len(constants), time_dim, reverse, zero_start)
    width = states[0].shape[-1]
    stacked = parts[0].shape[:-1] + (width,)
    dtype = parts[0].dtype
    nodes = macro("rnn", inputs, [(stacked, dtype)] + [(n.shape, n.dtype) for n in states],
                  params, loc)
    return wrap(nodes[0], *used), tuple(wrap(n, *used) for n in nodes[1:])


def _expand_rnn(inputs: tuple[Node, ...], params: tuple, loc: str | None) -> list[Node]:
    """The nodes of ``run_direction``'s macro: (stacked hidden states, *last state)."""
    mode, n_parts, n_states, present, n_constants, time_dim, reverse, zero_start = params
    rest = iter(inputs[n_parts + n_states:])
    w_hh, w_hr, b_hn = (next(rest) if p else None for p in present)
    constants = [next(rest) for _ in range(n_constants)]
    return unroll(mode, list(inputs[:n_parts]), list(inputs[n_parts:n_parts + n_states]), w_hh,
                  w_hr, b_hn, constants, time_dim, reverse, zero_start, loc)


def unroll(mode: str, parts: list[Node], states: list[Node], w_hh: Node | None,
           w_hr: Node | None, bias: Node | None, gate_constants: list[Node], time_dim: int,
           reverse: bool, zero_start: bool, loc: str | None) -> list[Node]:
    """The time loop of ``run_direction`` as nodes: [stacked hidden states, *last state]
    (``w_hh`` None: a single step from a zero state, which reads no hidden weight)."""
    w_hh_t = ops.permute(w_hh, (1, 0), loc) if w_hh is not None else None
    w_hr_t = ops.permute(w_hr, (1, 0), loc) if w_hr is not None else None
    half, offset = gate_constants if mode == "LSTM" else (None, None)
    length = parts[0].shape[time_dim]
    batch = parts[0].shape[1 - time_dim]
    gates_shape = (batch, sum(p.shape[-1] for p in parts))
    # what every step reads the same, built once (the nodes are the ones each step would build)
    if half is not None:
        half, offset = broadcast_node(half, gates_shape, loc), broadcast_node(offset, gates_shape,
                                                                              loc)
    sigmoid_half = None
    if mode == "GRU":
        hidden_size = gates_shape[1] // 3
        sigmoid_half = ops.const(0.5, (batch, 2 * hidden_size), parts[0].dtype, loc)
        if bias is not None:
            bias = broadcast_node(bias, (batch, hidden_size), loc)
    hs: list[Node] = [states[0]] * length
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        x_t = []
        for part in parts:
            ranges = tuple((t, t + 1, 1) if d == time_dim else (0, n, 1)
                           for d, n in enumerate(part.shape))
            x_t.append(ops.reshape(ops.slice_(part, ranges, loc), (batch, part.shape[-1]), loc))
        h = states[0]
        # a zero initial state needs no product (nor its gradient's) at the first step
        h_gates = ops.const(0, gates_shape, h.dtype, loc) if zero_start else \
            ops.matmul(h, w_hh_t, loc)
        zero_start = False
        if mode == "LSTM":
            h, c = lstm_update(ops.binary("add", x_t[0], h_gates, loc), states[1], half, offset,
                               loc)
            if w_hr_t is not None:
                h = ops.matmul(h, w_hr_t, loc)
            states = [h, c]
        elif mode == "GRU":
            states = [gru_update(x_t[0], x_t[1], h_gates, h, bias, loc, sigmoid_half)]
        else:
            states = [activation(mode, ops.binary("add", x_t[0], h_gates, loc), loc)]
        hs[t] = states[0]
    return [stack(hs, time_dim, loc), *states]


register("rnn", _expand_rnn)


class CellNodes:
    """The nodes a recurrent cell derives from its parameters at every call (transposed weights,
    biases and gate constants broadcast to the batch), kept for the next call with the same
    parameter nodes: a cell unrolled over 60 steps would otherwise rebuild them 60 times (12
    hash-consed lookups, a quarter of the cell's tracing time). It holds one set (the current
    parameters') and copies and pickles empty."""

    __slots__ = ("key", "nodes")

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.nodes: tuple = ()

    def __reduce__(self) -> tuple:
        return CellNodes, ()


def cell(mode: str, x: Tensor, state: Sequence[Tensor], w_ih: Tensor, w_hh: Tensor,
         b_ih: Tensor | None, b_hh: Tensor | None, gate_constants: Sequence[Tensor],
         used: Sequence[Tensor], loc: str | None, memo: CellNodes | None = None
         ) -> tuple[Tensor, ...]:
    """One step of ``RNNCell`` (h'), ``LSTMCell`` (h', c') or ``GRUCell`` (h') on batched
    ``x`` (N, input) and ``state`` ((h,) or (h, c), each (N, hidden)); ``used`` as in
    ``run_direction``; ``memo``: the calling module's ``CellNodes``."""
    xn, hn, bi, bh = _nodes(x, state[0], b_ih, b_hh)
    wi, wh = node_of(w_ih), node_of(w_hh)
    half, offset = _nodes(*gate_constants) if mode == "LSTM" else (None, None)
    # a move to another device keeps the parameters' nodes (and swaps their arrays): the
    # device is part of the key, and the old nodes are let go before they are built again, so
    # that a transposed weight is a new node with its device found anew (``node_device``)
    key = (wi, wh, bi, bh, half, offset, xn.shape[0], node_device(wi))
    if memo is not None and memo.key == key:
        wi_t, wh_t, bi, bh, half, offset = memo.nodes
    else:
        if memo is not None:
            memo.key, memo.nodes = None, ()
        wi_t, wh_t = ops.permute(wi, (1, 0), loc), ops.permute(wh, (1, 0), loc)
        gates_shape = (xn.shape[0], wi.shape[0])
        bi, bh, half, offset = (None if n is None else broadcast_node(n, gates_shape, loc)
                                for n in (bi, bh, half, offset))
        if memo is not None:
            memo.key, memo.nodes = key, (wi_t, wh_t, bi, bh, half, offset)
    x_gates = affine(xn, wi_t, bi, loc)
    h_gates = affine(hn, wh_t, bh, loc)
    if mode == "LSTM":
        out = lstm_update(ops.binary("add", x_gates, h_gates, loc), node_of(state[1]), half,
                          offset, loc)
    elif mode == "GRU":
        hidden = hn.shape[-1]
        x_rz, x_n = split_columns(x_gates, [2 * hidden, hidden], loc)
        out = (gru_update(x_rz, x_n, h_gates, hn, None, loc),)
    else:
        out = (activation(mode, ops.binary("add", x_gates, h_gates, loc), loc),)
    return tuple(wrap(n, *used) for n in out)
