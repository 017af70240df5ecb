"""Macro nodes (ir/macro.py): one node per output of a subgraph built only when compiled, as a
recurrent layer's time loop is traced."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fusegrad as fg
from fusegrad.backends.interpreter import evaluate
from fusegrad.errors import FusegradError
from fusegrad.ir import autodiff, macro, ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.graph import toposort
from fusegrad.nnlib.modules.rnn import GRU, LSTM
from fusegrad.tracer import realize

CALLS: list[tuple] = []


def _split_scale(inputs, params, loc):
    """(x * k, x + k): two outputs of one call."""
    CALLS.append(params)
    x = inputs[0]
    k = ops.const(params[0], x.shape, x.dtype)
    return [ops.binary("mul", x, k), ops.binary("add", x, k)]


macro.register("test_split_scale", _split_scale)


def _leaf(a: np.ndarray):
    return ops.buffer(Buffer(a.shape, str(a.dtype), a.reshape(-1)))


def test_a_call_is_built_once_for_all_of_its_outputs_and_chains_resolve():
    x = _leaf(np.arange(6.0).reshape(2, 3))
    first = macro.macro("test_split_scale", [x], [((2, 3), "float64")] * 2, (2.0,))
    again = macro.macro("test_split_scale", [x], [((2, 3), "float64")] * 2, (2.0,))
    assert first == again                         # hash-consed: the same nodes
    second = macro.macro("test_split_scale", [first[1]], [((2, 3), "float64")] * 2, (3.0,))
    CALLS.clear()
    out = macro.expand_macros([first[0], second[0], second[1]])
    assert CALLS == [(2.0,), (3.0,)]
    assert not any(n.op == "macro" for n in toposort(out))
    assert out[0] is ops.binary("mul", x, ops.const(2.0, (2, 3), "float64"))
    plus = ops.binary("add", x, ops.const(2.0, (2, 3), "float64"))
    assert out[2] is ops.binary("add", plus, ops.const(3.0, (2, 3), "float64"))
    assert macro.expand_macros(out) == out        # nothing left to expand: the same nodes


def test_a_wrong_declared_output_or_unknown_kind_is_an_error():
    x = _leaf(np.zeros((2, 3)))
    wrong = macro.macro("test_split_scale", [x], [((3, 2), "float64")] * 2, (1.0,))
    with pytest.raises(FusegradError, match="expanded to f64\\[2,3\\], declared f64\\[3,2\\]"):
        macro.expand_macros([wrong[0]])
    with pytest.raises(FusegradError, match="no registered expansion"):
        macro.macro("no_such_kind", [x], [((2, 3), "float64")], ())


def test_backward_differentiates_the_expansion():
    a = np.arange(6.0).reshape(2, 3)
    x = _leaf(a)
    y = macro.macro("test_split_scale", [x], [((2, 3), "float64")] * 2, (2.0,))
    root = ops.reduce("sum", ops.binary("mul", y[0], y[1]), (0, 1))
    seed = ops.const(1.0, root.shape, "float64")
    (g,) = autodiff.backward(root, seed, [x]).values()
    # d/dx sum(2x * (x + 2)) = 4x + 4
    np.testing.assert_allclose(evaluate([g])[0].reshape(2, 3), 4 * a + 4)
    assert autodiff.reached(root, [x], toposort([root])) == [x]


def _torch_pair(kind, **kwargs):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(**kwargs)
    ours = {"LSTM": LSTM, "GRU": GRU}[kind](**kwargs)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in ref.state_dict().items()})
    return ref, ours


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_layer_traces_a_handful_of_nodes_and_compiles_once(kind):
    ref, ours = _torch_pair(kind, input_size=3, hidden_size=4, num_layers=2, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    opt = fg.optim.SGD(ours.parameters(), lr=0.1)
    compiled = []
    for _ in range(3):
        opt.zero_grad()
        out, _ = ours(fg.tensor(x))
        nodes = toposort([out.node])
        assert sum(n.op == "macro" for n in nodes) == 2   # one per layer: the stacked output
        assert 3 * len(nodes) < len(toposort(macro.expand_macros([out.node])))
        out.sum().backward()
        opt.step()
        compiled.append(realize.STATS.programs_compiled)
    assert compiled[1] == compiled[2]


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_gradients_through_realized_and_retained_outputs_match_torch(kind):
    """The paths that differentiate without deferring (a retained output, an output realized
    before backward()) expand the macros themselves."""
    ref, ours = _torch_pair(kind, input_size=3, hidden_size=4)
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    t_out, _ = ref(tx)
    f_out, _ = ours(fx)
    t_out.retain_grad()
    f_out.retain_grad()
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    (t_out * t_out).sum().backward()
    (f_out * f_out).sum().backward()
    np.testing.assert_allclose(f_out.grad.numpy(), t_out.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=name)


def _zeros_or_scaled(inputs, params, loc):
    CALLS.append(("zeros_or_scaled", params))
    x = inputs[0]
    if params[0] == "zeros":
        return [ops.const(0.0, x.shape, x.dtype)]
    return [ops.binary("mul", x, ops.const(params[0], x.shape, x.dtype))]


macro.register("test_zeros_or_scaled", _zeros_or_scaled)


def test_call_expands_once_per_signature_to_learn_the_outputs():
    CALLS.clear()
    x = _leaf(np.ones(3))
    (a,) = macro.call("test_zeros_or_scaled", [x], (2.0,))
    (b,) = macro.call("test_zeros_or_scaled", [_leaf(np.ones(3))], (2.0,))   # same signature
    assert a.op == b.op == "macro" and a.shape == (3,) and a.dtype == "float64"
    assert CALLS == [("zeros_or_scaled", (2.0,))]
    # an output that reads no input is given as built: a macro would pass x a gradient
    (z,) = macro.call("test_zeros_or_scaled", [x], ("zeros",))
    assert z.op == "const"


def test_call_refuses_an_expansion_reading_a_buffer_it_was_not_given():
    foreign = _leaf(np.ones(3))
    macro.register("test_foreign", lambda inputs, params, loc: [
        ops.binary("add", inputs[0], foreign)])
    with pytest.raises(FusegradError, match="not among its inputs"):
        macro.call("test_foreign", [_leaf(np.ones(3))], ())


def test_convolution_and_loss_trace_as_macros():
    conv = fg.nn.Conv2d(2, 3, 3, padding=1)
    x = fg.tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32))
    loss = fg.nn.functional.cross_entropy(conv(x).sum((2, 3)), fg.tensor(np.array([0, 2])))
    kinds = sorted(n.attrs[0] for n in toposort([loss.node]) if n.op == "macro")
    assert kinds == ["nll", "windows"]


def test_backward_runs_again_through_windows_but_not_through_a_convolution():
    """im2col windows save no values (pads, slices, adds), as torch's Im2ColBackward saves only
    sizes; a convolution's product does."""
    x = fg.tensor(np.random.default_rng(2).random((1, 2, 4, 4)).astype(np.float32),
                  requires_grad=True)
    s = fg.nn.functional.unfold(x, (2, 2)).sum()
    s.backward()
    s.backward()
    np.testing.assert_allclose(x.grad.numpy()[0, 0, 0], [2.0, 4.0, 4.0, 2.0])
    y = fg.nn.Conv2d(2, 1, 2)(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_the_disk_cache_fingerprint_covers_every_expander():
    from fusegrad.backends.numba_cpu.program_cache import MACRO_MODULES
    modules = {fn.__module__ for fn in macro.EXPANDERS.values()
               if fn.__module__.startswith("fusegrad.")}
    assert modules == {f"fusegrad.tracer.{name}" for name in MACRO_MODULES}
