"""fusegrad.compile: trace once per signature, replay; equal to uncompiled; refusals."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad import CaptureError
from fusegrad.demo import make_step


def _train(model_fn, opt_fn, batches, compiled, lr_schedule=None):
    fg.manual_seed(0)
    model = model_fn()
    opt = opt_fn(model.parameters())
    calls = {"n": 0}

    def step(x, y):
        calls["n"] += 1
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = fg.compile(step) if compiled else step
    losses = []
    for i, (x, y) in enumerate(batches):
        if lr_schedule is not None:
            opt.param_groups[0]["lr"] = lr_schedule(i)
        losses.append(fn(fg.tensor(x), fg.tensor(y)).item())
    params = [p.detach().numpy().copy() for p in model.parameters()]
    state = [{k: v.detach().numpy().copy() for k, v in s.items() if isinstance(v, fg.Tensor)}
             for _, s in opt.state.items()]
    return losses, params, state, calls["n"], fn


def _batches(n, batch=8, features=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, features)).astype(np.float32),
             rng.integers(0, classes, batch)) for _ in range(n)]


def _mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def _sgd(params):
    return optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _assert_same(a, b):
    np.testing.assert_array_equal(np.array(a[0]), np.array(b[0]))
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)
    assert len(a[2]) == len(b[2])
    for sa, sb in zip(a[2], b[2]):
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])


def test_compiled_mlp_training_equals_uncompiled():
    batches = _batches(20)
    eager = _train(_mlp, _sgd, batches, compiled=False)
    compiled = _train(_mlp, _sgd, batches, compiled=True)
    _assert_same(eager, compiled)
    assert compiled[3] == 1  # the body ran once for 20 calls


def test_lr_changes_are_read_each_call_without_recompiling():
    batches = _batches(10)
    schedule = lambda i: 0.1 / (1 + i)  # noqa: E731
    eager = _train(_mlp, _sgd, batches, compiled=False, lr_schedule=schedule)
    compiled = _train(_mlp, _sgd, batches, compiled=True, lr_schedule=schedule)
    _assert_same(eager, compiled)
    assert compiled[3] == 1


def test_dropout_and_batchnorm_train_mode_equal_uncompiled():
    def model():
        return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(16, 4))
    batches = _batches(8)

    def run(compiled):
        out = _train(model, _sgd, batches, compiled)
        return out

    eager, compiled = run(False), run(True)
    _assert_same(eager, compiled)
    assert compiled[3] == 1


def test_body_runs_once_per_signature_and_limit_warns():
    counter = {"n": 0}

    @fg.compile(cache_limit=2)
    def f(x):
        counter["n"] += 1
        return (x * 2 + 1).sum()

    for _ in range(100):
        f(fg.ones(4, 3))
    assert counter["n"] == 1
    assert f(fg.ones(4, 3)).item() == 36.0
    f(fg.ones(5, 3))
    assert counter["n"] == 2
    with pytest.warns(RuntimeWarning, match=r"cache_limit=2.*shape \[5, 3\].*shape \[6, 3\]"):
        f(fg.ones(6, 3))


def test_replay_uses_new_argument_values():
    @fg.compile
    def f(x, y):
        return x @ y + 1

    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(3, 2)
    f(fg.tensor(a), fg.tensor(b))
    out = f(fg.tensor(a * 2), fg.tensor(b))
    np.testing.assert_allclose(out.numpy(), (a * 2) @ b + 1)


def test_item_inside_is_refused_with_the_line():
    @fg.compile
    def f(x):
        return x.sum().item()  # refused-item

    with pytest.raises(CaptureError, match=r"(?s)item\(\).*test_compile.py:\d+"):
        f(fg.ones(3))


def test_numpy_inside_is_refused():
    @fg.compile
    def f(x):
        return x.numpy()

    with pytest.raises(CaptureError, match="numpy"):
        f(fg.ones(3))


def test_python_control_flow_on_tensor_values_is_refused():
    @fg.compile
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(CaptureError, match="bool"):
        f(fg.ones(3))


def test_mutating_an_outside_tensor_is_refused():
    counter = fg.zeros(3)
    counter.numpy()

    @fg.compile
    def f(x):
        counter.add_(x)
        return x

    with pytest.raises(CaptureError, match="neither an argument, a parameter"):
        f(fg.ones(3))


def test_mutating_an_argument_is_replayed():
    @fg.compile
    def f(acc, x):
        acc.add_(x)
        return acc.sum()

    acc = fg.zeros(3)
    for _ in range(4):
        f(acc, fg.ones(3))
    np.testing.assert_array_equal(acc.numpy(), [4.0, 4.0, 4.0])


def test_an_argument_updated_in_place_is_this_calls_argument():
    @fg.compile
    def inc(a):
        a.add_(1)
        return a * 2, a

    first, second = fg.zeros(3), fg.full((3,), 5.0)
    inc(first)
    doubled, same = inc(second)
    assert same is second
    np.testing.assert_array_equal(first.numpy(), [1, 1, 1])
    np.testing.assert_array_equal(second.numpy(), [6, 6, 6])
    np.testing.assert_array_equal(doubled.numpy(), [12, 12, 12])


def test_a_compiled_model_called_inside_a_compiled_step_is_traced_into_it():
    eager = _train(_mlp, _sgd, _batches(4), compiled=False)
    fg.manual_seed(0)
    model = _mlp()
    forward = fg.compile(model)
    opt = _sgd(model.parameters())
    forward(fg.tensor(_batches(1)[0][0]))  # traced on its own first

    step = fg.compile(make_step(forward, opt, nn.CrossEntropyLoss()))
    losses = [step(fg.tensor(x), fg.tensor(y)).item() for x, y in _batches(4)]
    np.testing.assert_array_equal(losses, eager[0])
    for p, q in zip(model.parameters(), eager[1]):
        np.testing.assert_array_equal(p.detach().numpy(), q)


def test_the_same_tensor_passed_twice_is_its_own_signature():
    @fg.compile
    def f(a, b):
        a.add_(1)
        return a * 2 + b

    x = fg.ones(3)
    np.testing.assert_array_equal(f(x, x).numpy(), [6, 6, 6])  # b is the updated a
    np.testing.assert_array_equal(f(fg.ones(3), fg.zeros(3)).numpy(), [4, 4, 4])
    y = fg.ones(3)
    np.testing.assert_array_equal(f(y, y).numpy(), [6, 6, 6])
    assert f.entry_count == 2


def test_returned_tensors_that_are_not_outputs_come_from_this_call():
    warnings.simplefilter("ignore", RuntimeWarning)  # returning the grad-requiring weight
    lin = nn.Linear(2, 2)
    outside = fg.ones(2)

    @fg.compile
    def f(a, b):
        y = a * 3
        return (a, a.detach(), b, y, y, lin.weight, lin.weight.detach(), outside,
                fg.tensor([1.0, 2.0]))

    first = f(fg.randn(2), fg.randn(2))
    a, b = fg.randn(2), fg.randn(2)
    with fg.no_grad():
        lin.weight.mul_(0)
    r = f(a, b)
    assert r[0] is a and r[2] is b and r[3] is r[4] and r[5] is lin.weight and r[7] is outside
    np.testing.assert_array_equal(r[1].numpy(), a.numpy())
    assert not r[1].requires_grad
    np.testing.assert_allclose(r[3].numpy(), a.numpy() * 3, rtol=1e-6)
    np.testing.assert_array_equal(r[6].numpy(), np.zeros((2, 2), np.float32))
    assert r[8] is not first[8]
    np.testing.assert_array_equal(r[8].numpy(), [1.0, 2.0])


def test_dropout_random_numbers_advance_like_uncompiled():
    def run(compiled):
        fg.manual_seed(3)
        drop = nn.Dropout(0.5)
        fn = fg.compile(lambda x: drop(x)) if compiled else (lambda x: drop(x))
        return [fn(fg.ones(6, 5)).numpy().copy() for _ in range(4)]

    eager, compiled = run(False), run(True)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(compiled[0], compiled[1])


def test_compile_a_module_and_explain():
    fg.manual_seed(0)
    model = _mlp()
    cm = fg.compile(model)
    x = fg.randn(8, 12)
    warnings.simplefilter("ignore", RuntimeWarning)  # a forward returning a grad-requiring value
    np.testing.assert_allclose(cm(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(cm(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)
    text = cm.explain()
    for word in ("ops traced", "pass cse", "pass dce", "kernels", "extern calls", "buffers",
                 "compile", "replays", "def replay(args):", ".compiled.program.run(["):
        assert word in text
    model.eval()
    cm(x)  # a new training mode is a new signature
    assert cm.entry_count == 2


def test_mode_switches_replay_the_entry_of_each_mode():
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2))
    calls = {"n": 0}

    @fg.compile
    def forward(x):
        calls["n"] += 1
        return model(x).detach()

    x = fg.randn(3, 6)
    train = forward(x)
    model.eval()
    evaluated = [forward(x).numpy() for _ in range(2)]
    model[1].training = True  # set directly on one module, not through train()
    partly = forward(x)
    model.train()
    again = forward(x)
    assert calls["n"] == 3 and forward.entry_count == 3
    np.testing.assert_array_equal(evaluated[0], evaluated[1])
    with fg.no_grad():
        np.testing.assert_allclose(evaluated[0], model.eval()(x).numpy(), rtol=1e-6)
    assert not np.array_equal(train.numpy(), again.numpy())  # dropout draws anew each call
    assert partly.shape == train.shape


SCRIPT = r"""
import json
import fusegrad as fg, fusegrad.nnlib as nn, fusegrad.optimlib as optim
from fusegrad.backends.numba_cpu import STATS
fg.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
@fg.compile
def step(x, y):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss
x, y = fg.randn(4, 6), fg.randint(0, 3, (4,))
losses = [step(x, y).item() for _ in range(3)]
print(json.dumps({"compiled": STATS.kernels_compiled, "loaded": STATS.kernels_loaded,
                  "losses": losses}))
"""


def _run_script(cache):
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(cache), FUSEGRAD_BACKEND="numba_cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing_and_truncated_entries_rebuild(tmp_path):
    first = _run_script(tmp_path)
    assert first["compiled"] > 0
    second = _run_script(tmp_path)
    assert second["compiled"] == 0 and second["loaded"] > 0
    assert second["losses"] == first["losses"]
    victim = sorted(tmp_path.rglob("*.nbc"))[0]
    victim.write_bytes(victim.read_bytes()[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = _run_script(tmp_path)
    assert third["losses"] == first["losses"]
    assert third["compiled"] >= 1
