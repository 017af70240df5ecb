"""fusegrad.compile reads the right tensors on replay, whatever aliases the trace saw."""
from contextlib import nullcontext

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.demo import make_step


def _step(model, opt, compiled):
    step = make_step(model, opt, nn.CrossEntropyLoss())
    return fg.compile(step) if compiled else step


def _losses(model, compiled, steps=6):
    fn = _step(model, optim.SGD(model.parameters(), lr=0.1), compiled)
    x, y = fg.randn(8, 5), fg.randint(0, 3, (8,))
    return [fn(x, y).item() for _ in range(steps)]


def _model_loaded_from(other):
    m = nn.Linear(5, 3)
    m.load_state_dict(other.state_dict())
    return m


@pytest.mark.parametrize("compiled", [False, True])
def test_training_after_load_state_dict_updates_the_weights(compiled, tmp_path):
    fg.manual_seed(0)
    src = nn.Linear(5, 3)
    fg.save(src.state_dict(), str(tmp_path / "w.fg"))
    model = nn.Linear(5, 3)
    model.load_state_dict(fg.load(str(tmp_path / "w.fg")))
    fg.manual_seed(1)
    losses = _losses(model, compiled)
    assert len(set(losses)) == len(losses)  # every step changed the weights
    again = _model_loaded_from(src)
    fg.manual_seed(1)
    assert _losses(again, compiled) == pytest.approx(losses, rel=1e-6)


def test_clone_and_identity_views_inside_forward_do_not_freeze_weights():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x):
            w = self.lin.weight.reshape(self.lin.weight.shape)
            return x @ w.T + self.lin.bias

    fg.manual_seed(0)
    net = Net()
    _ = [p.clone() for p in net.parameters()]
    fg.manual_seed(1)
    eager = _losses(net, False)
    fg.manual_seed(0)
    net2 = Net()
    _ = [p.clone() for p in net2.parameters()]
    fg.manual_seed(1)
    assert _losses(net2, True) == pytest.approx(eager, rel=1e-6)


def test_grad_mode_is_part_of_the_signature():
    w = nn.Parameter(fg.ones(3))

    @fg.compile
    def f(x):
        return (x * w).sum()

    with fg.no_grad():
        assert not f(fg.ones(3)).requires_grad
    assert f(fg.ones(3)).requires_grad
    assert f(fg.ones(3)).requires_grad  # replayed, with autograd history
    assert f.entry_count == 2


def _train_with_compiled_forward(model_fn, compiled, steps=5):
    """The usual torch.compile loop: only the model is compiled; loss, backward and the
    optimizer step run outside."""
    fg.manual_seed(0)
    model = model_fn()
    forward = fg.compile(model) if compiled else model
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = fg.randn(6, 4), fg.randint(0, 3, (6,))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().numpy().copy() for p in model.parameters()], model


@pytest.mark.parametrize("model_fn", [
    lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)),
    lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)),
], ids=["dropout", "batchnorm"])
def test_a_compiled_forward_trains_with_backward_outside(model_fn):
    eager = _train_with_compiled_forward(model_fn, False)
    compiled = _train_with_compiled_forward(model_fn, True)
    assert compiled[0] == eager[0]
    for a, b in zip(compiled[1], eager[1]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(compiled[2].buffers(), eager[2].buffers()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_replayed_outputs_backward_like_uncompiled_values():
    w = nn.Parameter(fg.tensor([1.0, 2.0, 3.0]))
    frozen = nn.Parameter(fg.tensor([1.0, 1.0, 1.0]))

    @fg.compile
    def f(x):
        return (x * w * frozen.detach()).sum()

    f(fg.ones(3))
    out = f(fg.tensor([1.0, 0.0, 2.0]))  # replayed
    assert out.requires_grad and not out.is_leaf
    out.backward(retain_graph=True)
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 0.0, 2.0])
    assert frozen.grad is None  # no gradient through a detach() inside
    out.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 0.0, 4.0])
    with pytest.raises(RuntimeError, match="second time"):
        out.backward()


def test_numpy_array_arguments_are_refused():
    f = fg.compile(lambda x, a: x * float(a.sum()))
    with pytest.raises(TypeError, match="numpy array"):
        f(fg.ones(2), np.ones(3))


def test_cached_programs_do_not_keep_step_arrays_alive():
    from fusegrad.tracer.realize import STATS
    x = fg.randn(7, 9)
    (x * 3 + 1).realize()
    compiled = STATS.last_entry.compiled
    assert all(n.attrs[0].data is None for n in compiled.inputs)


def test_class_indices_are_checked_on_every_replay():
    import fusegrad.nnlib as nn
    model = nn.Linear(4, 3)

    @fg.compile
    def loss_of(x, y):
        return nn.CrossEntropyLoss()(model(x), y).detach()

    x = fg.randn(2, 4)
    loss_of(x, fg.tensor([0, 2]))
    loss_of(x, fg.tensor([1, 2]))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        loss_of(x, fg.tensor([3, 0]))


def test_computed_indices_out_of_range_raise():
    x = fg.randn(4, 3)
    with pytest.raises(IndexError, match="out of range"):
        x[fg.tensor([1]) * 5].numpy()


@pytest.mark.parametrize("compiled", [False, True])
def test_a_step_writes_into_the_weights_buffer_as_torch_does(compiled):
    """A step writes the new weight into the parameter's own buffer: a detached view shares it
    and shows the new value, as in torch; a realized copy and a lazy expression keep the value
    they had before the step, computed with the step's program (reads before its writes)."""
    fg.manual_seed(0)
    model = nn.Linear(5, 3)
    fn = _step(model, optim.SGD(model.parameters(), lr=0.5), compiled)
    x, y = fg.randn(8, 5), fg.randint(0, 3, (8,))
    fn(x, y), fn(x, y)  # the second call replays
    w = model.weight
    buffer = w.node.attrs[0]
    before = w.detach().numpy().copy()
    view, copy = w.detach(), (w * 1.0).detach()
    copy.numpy()
    lazy = w.detach() + 0.0
    fn(x, y)
    after = w.detach().numpy().copy()
    assert not np.array_equal(after, before)
    assert w.node.attrs[0] is buffer
    np.testing.assert_array_equal(view.numpy(), after)
    for t in (copy, lazy):
        np.testing.assert_array_equal(t.numpy(), before)
    fn(x, y)
    assert not np.array_equal(w.detach().numpy(), after)
    assert w.node.attrs[0] is buffer


def _data_step(update):
    w = nn.Parameter(fg.tensor([1.0, 2.0, 3.0]))

    def step(x):
        with fg.no_grad():
            update(w, x)
    return w, step


@pytest.mark.parametrize("compiled", [False, True])
def test_data_minus_equals_keeps_the_parameters_buffer(compiled):
    """``p.data -= u`` updates ``p`` in its own buffer, so a compiled step replays it."""
    def update(w, x):
        w.data -= 0.5 * x
    w, step = _data_step(update)
    step = fg.compile(step) if compiled else step
    buffer = w.node.attrs[0]
    x = fg.tensor([2.0, 4.0, 6.0])
    for _ in range(3):
        step(x)
    np.testing.assert_array_equal(w.detach().numpy(), [-2.0, -4.0, -6.0])
    assert w.node.attrs[0] is buffer
    if compiled:
        assert (step.misses, step.hits) == (1, 2)


def test_a_body_giving_a_parameter_new_storage_runs_every_call_with_a_warning():
    """``p.data = q`` gives ``p`` a new buffer, which a replay cannot do: the body runs."""
    def update(w, x):
        w.data = w * 0.5 + x
    results = []
    for wrap in (lambda f: f, fg.compile):
        w, step = _data_step(update)
        step = wrap(step)
        with pytest.warns(RuntimeWarning, match="storage of a state tensor") if \
                wrap is fg.compile else nullcontext():
            for _ in range(3):
                step(fg.tensor([1.0, 1.0, 1.0]))
        results.append(w.detach().numpy().copy())
    np.testing.assert_array_equal(results[1], results[0])
    assert (step.misses, step.hits) == (3, 0)
