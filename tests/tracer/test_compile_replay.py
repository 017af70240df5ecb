"""Replays of fusegrad.compile against running the same Python uncompiled: what the call returns,
what it updates, what tensors held outside see, and the gradients a later backward computes."""
import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim


def _compare(run):
    """``run(compile_or_not)`` uncompiled, then compiled, from the same seed: the results match."""
    results = []
    for compiled in (False, True):
        fg.manual_seed(0)
        results.append(run(fg.compile if compiled else (lambda f: f)))
    _same(*results)
    return results


def _same(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif a is None or b is None:
        assert a is None and b is None
    else:
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)


class _CustomOptimizer(optim.Optimizer):
    """A user's optimizer, written as torch's guide shows: ``update`` per parameter."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    def step(self):
        with fg.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    self.update(p, self.state[p], group["lr"])


def _step(m, opt):
    """A training step of ``m`` on a squared-output loss; it returns the loss."""
    def step(x):
        opt.zero_grad()
        loss = m(x).pow(2).sum()
        loss.backward()
        opt.step()
        return loss
    return step


def _train_linear(optimizer_class, wrap, steps=5):
    """A Linear layer trained by ``optimizer_class`` through a (wrapped) step; its parameters."""
    m = nn.Linear(3, 2)
    opt = optimizer_class(m.parameters(), 0.1)

    step = wrap(_step(m, opt))
    for i in range(steps):
        step(fg.ones(4, 3) * (i + 1))
    return [_values(p) for p in m.parameters()]


def _values(t):
    return None if t is None else t.detach().numpy().copy()


def test_fresh_argument_leaves_get_their_gradients():
    def run(wrap):
        w = fg.randn(3)
        f = wrap(lambda x: (x * w).sum())
        grads = []
        for _ in range(3):
            x = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
            f(x).backward()
            grads.append(_values(x.grad))
        return grads
    _compare(run)


def test_gradients_flow_through_a_non_leaf_argument():
    def run(wrap):
        w = fg.randn(3, requires_grad=True)
        v = nn.Parameter(fg.randn(3))
        f = wrap(lambda h: (h * v).sum())
        out = []
        for _ in range(3):
            f(w * 2).backward()
            out.append((_values(w.grad), _values(v.grad)))
        return out
    _compare(run)


def test_an_argument_updated_in_place_keeps_its_gradient_history():
    def run(wrap):
        w = fg.randn(3, requires_grad=True)

        def f(h):
            h.mul_(2)
            return h

        f = wrap(f)
        out = []
        for _ in range(3):
            w.grad = None
            h = f(w * 3)
            h.sum().backward()
            out.append((_values(h), _values(w.grad)))
        return out
    _compare(run)


def test_a_parameter_that_was_a_view_before_the_step_is_its_own_tensor_after():
    def run(wrap):
        w = nn.Parameter(fg.tensor([1.0, 1.0, 1.0]))

        def bump():
            with fg.no_grad():
                w.add_(1.0)

        step = wrap(bump)
        step()
        src = fg.tensor([10.0, 20.0, 30.0])
        w.data = src
        step()
        with fg.no_grad():
            g = wrap(lambda a: a + w)
            return [_values(g(src)) for _ in range(3)] + [_values(w), _values(src)]
    _compare(run)


def test_a_returned_gradient_is_this_steps_gradient():
    def run(wrap):
        m = nn.Linear(3, 2)
        opt = optim.SGD(m.parameters(), lr=0.1)

        def step(x):
            m(x).pow(2).sum().backward()
            return m.weight.grad

        step = wrap(step)
        x = fg.randn(4, 3)
        out = []
        for _ in range(3):
            opt.zero_grad()
            g = step(x)
            out.append(_values(g))
            assert g is m.weight.grad
            opt.step()
        return out
    _compare(run)


def test_a_detach_taken_before_an_update_keeps_the_old_value():
    def run(wrap):
        m = nn.Linear(2, 2)
        opt = optim.SGD(m.parameters(), lr=0.5)

        def step(x):
            xd, wd = x.detach(), m.weight.detach()
            x.mul_(2)
            opt.zero_grad()
            m(x).sum().backward()
            opt.step()
            return xd, wd

        step = wrap(step)
        return [[_values(t) for t in step(fg.tensor([[1.0, 2.0]]))] for _ in range(3)]
    _compare(run)


def test_arguments_that_share_memory_only_now_are_a_new_signature():
    def run(wrap):
        def f(x, y):
            x.add_(1)
            return y * 2

        f = wrap(f)
        out = [_values(f(fg.ones(3), fg.ones(3)))]
        a = fg.ones(3)
        out.append(_values(f(a, a)))
        out.append(_values(a))
        return out
    _compare(run)


def test_a_gradient_held_from_the_last_step_keeps_its_value():
    def run(wrap):
        m = nn.Linear(3, 2)
        opt = optim.Adam(m.parameters(), lr=0.1)

        step = wrap(_step(m, opt))
        x = fg.randn(4, 3)
        held = []
        for _ in range(4):
            step(x)
            held.append(m.weight.grad)
        return [_values(g) for g in held]
    _compare(run)


def test_loading_optimizer_and_model_state_between_steps():
    def run(wrap):
        m = nn.Linear(3, 2)
        opt = optim.Adam(m.parameters(), lr=0.1)

        step = wrap(_step(m, opt))
        x = fg.randn(4, 3)
        out = []
        for i in range(7):
            if i == 2:
                saved, model = opt.state_dict(), m.state_dict()
            if i == 5:
                opt.load_state_dict(saved)
                m.load_state_dict(model)
            out.append([_values(step(x))] + [_values(p) for p in m.parameters()])
        return out
    _compare(run)


def test_replacing_a_submodule_or_parameter_traces_again():
    def run(wrap):
        net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
        keep = net[2]  # the replaced layer stays alive: a replay must not keep using it
        forward = wrap(net)
        x = fg.randn(4, 3)
        with fg.no_grad():
            out = [_values(forward(x)), _values(forward(x))]
            net[2] = nn.Linear(3, 2)
            out.append(_values(forward(x)))
            net[0].weight = nn.Parameter(fg.ones(3, 3))
            out.append(_values(forward(x)))
        assert keep is not net[2]
        return out
    _compare(run)


def test_a_leaf_viewed_by_another_tensor_is_read_on_replay():
    w = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (w * 1).sum().backward()
    v = w.view(3)
    f = fg.compile(lambda x: (x * w).detach())
    assert v.shape == (3,)
    for _ in range(2):
        np.testing.assert_array_equal(f(fg.ones(3)).numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("steps", [3])
def test_forward_only_replays_with_dropout_give_the_same_gradients(steps):
    def run(wrap):
        model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 2))
        forward = wrap(model)
        out = []
        for _ in range(steps):
            x = fg.randn(5, 4, requires_grad=True)
            model.zero_grad()
            forward(x).pow(2).sum().backward()
            out.append([_values(x.grad)] + [_values(p.grad) for p in model.parameters()])
        return out
    _compare(run)


def test_backward_inside_reaches_this_calls_argument():
    def run(wrap):
        p = nn.Parameter(fg.ones(3))

        def f(x):
            p.grad = None
            x.grad = None
            (x * p).sum().backward()

        f = wrap(f)
        first = fg.ones(3, requires_grad=True)
        f(first)
        p.data = fg.tensor([5.0, 6.0, 7.0])
        second = fg.ones(3, requires_grad=True)
        f(second)
        return [_values(first.grad), _values(second.grad), _values(p.grad)]
    _compare(run)


def test_gradient_accumulation_over_compiled_calls_with_held_grads():
    def run(wrap):
        m = nn.Linear(3, 2)
        opt = optim.SGD(m.parameters(), lr=0.1)

        def f(x):
            loss = m(x).pow(2).sum()
            loss.backward()
            return loss

        f = wrap(f)
        x = fg.randn(4, 3)
        held, out = [], []
        for _ in range(4):
            opt.zero_grad()
            f(x)
            held.append([p.grad for p in m.parameters()])
            f(x * 0.5)
            out.append(_values(m.weight.grad))
            opt.step()
        if hasattr(f, "misses"):
            assert f.misses == 2  # one trace for an empty grad, one for accumulating into it
        return out + [[_values(g) for g in gs] for gs in held]
    _compare(run)


def test_freezing_and_unfreezing_a_layer_after_compiling():
    def run(wrap):
        m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
        opt = optim.SGD(m.parameters(), lr=0.1)

        step, forward = wrap(_step(m, opt)), wrap(m)
        x = fg.randn(4, 3)
        out = []
        for i in range(5):
            m[0].requires_grad_(i not in (1, 2))
            step(x)
            y = forward(x)
            out.append([_values(p) for p in m.parameters()] + [y.requires_grad])
        return out
    _compare(run)


def test_modules_added_after_compiling_are_used():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 3)])
            self.head = nn.Linear(3, 3, bias=False)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.head(x)

    def run(wrap):
        m = Stack()
        forward = wrap(m)
        x = fg.randn(5, 3)
        out = []
        with fg.no_grad():
            for i in range(5):
                if i == 2:
                    m.layers.append(nn.Linear(3, 3))
                if i == 3:
                    m.head.bias = nn.Parameter(fg.ones(3))
                if i == 4:
                    m.add_module("extra", nn.ReLU())  # unused by forward: same values
                out.append(_values(forward(x)))
        return out
    _compare(run)


def test_returned_clone_and_views_of_parameters_and_arguments():
    def run(wrap):
        w = nn.Parameter(fg.zeros(2, 3))
        f = wrap(lambda x: (x * 2, w.clone(), w.view(3, 2), w.detach(), x.clone(), x.reshape(3)))
        out = []
        for _ in range(3):
            x = fg.randn(3, requires_grad=True)
            r = f(x)
            r[4].sum().backward()
            out.append([_values(t) for t in r] + [[t.requires_grad for t in r],
                                                 _values(x.grad)])
            with fg.no_grad():
                w.add_(1.0)
        return out
    _compare(run)


def test_optimizer_state_replaced_between_steps():
    def run(wrap):
        m = nn.Linear(3, 2)
        opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

        step = wrap(_step(m, opt))
        x = fg.randn(4, 3)
        old = []
        for i in range(5):
            if i == 2:
                old = [dict(opt.state[p]) for p in m.parameters()]  # keeps the old buffers
                opt.state.clear()
            if i == 4:
                opt.state[m.weight] = {"momentum_buffer": fg.ones(2, 3)}
            step(x)
        return [_values(p) for p in m.parameters()] + [len(old)]
    _compare(run)


def test_retain_grad_on_a_compiled_output_and_on_a_realized_value():
    def run(wrap):
        m = nn.Linear(3, 4)
        forward = wrap(m)
        x = fg.randn(5, 3)
        out = []
        for _ in range(3):
            m.zero_grad()
            h = forward(x)
            h.retain_grad()
            h.detach().numpy()  # realized before its backward
            (h * h).sum().backward()
            out.append([_values(h.grad), _values(m.weight.grad)])
        return out
    eager, _ = _compare(run)
    assert eager[0][0] is not None  # d(sum h*h)/dh = 2h


def test_a_forward_that_replaces_its_buffer_runs_every_call_with_a_warning():
    class Ema(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.register_buffer("avg", fg.zeros(3))

        def forward(self, x):
            y = self.lin(x)
            self.avg = self.avg * 0.9 + y.detach().mean(0) * 0.1
            return y

    def run(wrap):
        m = Ema()
        forward = wrap(m)
        with pytest.warns(RuntimeWarning, match="replaces Ema.avg") if wrap is fg.compile \
                else _nothing():
            out = [_values(forward(fg.randn(4, 3))) for _ in range(3)]
        return out + [_values(m.avg)]
    _compare(run)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_plain_arguments_equal_in_python_but_not_in_a_trace_are_different_signatures():
    results = []
    for wrap in ((lambda f: f), fg.compile):
        fill = wrap(lambda x, v: x + fg.full((2,), v))
        scale = wrap(lambda t, s: t / s)
        x, t = fg.tensor([1, 2]), fg.tensor([1.0, -1.0])
        out = [fill(x, v) for v in (1.0, 1, True, 1.0)]
        out += [scale(t, s) for s in (0.0, -0.0, 0.0, float("nan"), float("nan"))]
        if wrap is fg.compile:
            assert fill.entry_count == 3 and scale.entry_count == 3  # a NaN matches itself
        results.append(out)
    for eager, compiled in zip(*results):
        assert eager.dtype == compiled.dtype
        np.testing.assert_array_equal(compiled.numpy(), eager.numpy())


def test_a_parameter_replaced_on_a_module_the_trace_never_called():
    import fusegrad.nnlib.functional as F

    def run(wrap):
        lin = nn.Linear(3, 2)
        f = wrap(lambda x: F.linear(x, lin.weight, lin.bias))
        x = fg.ones(1, 3)
        with fg.no_grad():
            out = [_values(f(x)), _values(f(x))]
            keep = lin.weight
            lin.weight = nn.Parameter(fg.zeros(2, 3))
            out.append(_values(f(x)))
        assert keep is not lin.weight
        return out
    _compare(run)


def test_module_dict_pop_and_param_list_append():
    def run(wrap):
        md = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
        f = wrap(lambda x: sum(m(x) for m in md.values()).detach())
        x = fg.ones(1, 2)
        out = [_values(f(x)), _values(f(x))]
        keep = md.pop("b")
        out.append(_values(f(x)))

        a, b = nn.Parameter(fg.ones(3)), nn.Parameter(fg.ones(3))
        opt = optim.SGD([a], lr=0.1)

        def step():
            a.grad = None
            b.grad = None
            ((a * 2).sum() + (b * 3).sum()).backward()
            opt.step()

        step = wrap(step)
        for i in range(5):
            if i == 2:
                opt.param_groups[0]["params"].append(b)
            step()
            out.append([_values(a), _values(b)])
        assert keep is not None
        return out
    _compare(run)


def test_eager_code_that_replaces_tensors_does_not_make_compiled_functions_retrace():
    class Ema(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("avg", fg.zeros(2))

        def forward(self, x):
            self.avg = self.avg * 0.9 + x.mean(0) * 0.1
            return self.avg

    class MyMomentum(_CustomOptimizer):  # replaces its state tensor each step, eagerly
        def update(self, p, st, lr):
            if "m" not in st:
                st["m"] = fg.zeros_like(p)
            st["m"] = st["m"] * 0.9 + p.grad * 0.1
            p.sub_(st["m"] * lr)

    model, ema = nn.Linear(3, 2), Ema()
    forward = fg.compile(model)
    opt = MyMomentum(model.parameters(), 0.1)
    for i in range(6):
        opt.zero_grad()
        y = forward(fg.ones(4, 3) * i)
        y.pow(2).mean().backward()
        opt.step()
        with fg.no_grad():
            ema(y.detach())
    assert forward.misses == 1


def test_a_guard_that_misses_draws_no_random_numbers():
    import fusegrad.nnlib.functional as F

    def run(wrap):
        m = nn.Linear(3, 3)
        f = wrap(lambda x: (F.dropout(x, 0.5), m.weight))
        x = fg.ones(8)
        out = []
        for i in range(6):
            if i == 3:
                m.weight.requires_grad_(False)
            out.append(_values(f(x)[0]))
        return out + [_values(F.dropout(x, 0.5))]
    _compare(run)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_compiled_optimizer_step_reads_the_grads_of_an_eager_backward(set_to_none):
    def run(wrap):
        m = nn.Linear(4, 3)
        opt = optim.Adam(m.parameters(), lr=0.01)
        step = wrap(lambda: opt.step())
        norm = wrap(lambda: sum((p.grad * p.grad).sum() for p in m.parameters()))
        out, held = [], []
        for i in range(6):
            opt.zero_grad(set_to_none=set_to_none)
            (m(fg.ones(5, 4) * i) ** 2).mean().backward()
            held.append(m.weight.grad)
            out.append(_values(norm()))
            step()
            out.append(_values(m.weight))
        if hasattr(step, "misses"):
            assert step.misses == 1 and norm.misses == 1
        return out
    _compare(run)


@pytest.mark.parametrize("assign", ["zeros_like", "tensor"])
def test_a_grad_assigned_inside_the_body(assign):
    def run(wrap):
        w = nn.Parameter(fg.ones(3))

        def step(x):
            w.grad = fg.zeros_like(w) if assign == "zeros_like" else \
                fg.tensor(np.zeros(3, np.float32))
            (w * x).sum().backward()
            return w.grad

        step = wrap(step)
        out = [_values(step(fg.ones(3) * (i + 1))) for i in range(5)]
        if hasattr(step, "misses"):
            assert step.misses == 1
        return out
    _compare(run)


def test_backward_inside_through_an_argument_with_history_runs_every_call():
    def run(wrap):
        w = fg.ones(3, requires_grad=True)
        f = wrap(lambda h: (h * h).sum().backward())
        out = []
        for k in (2.0, 3.0, 4.0):
            w.grad = None
            f(w * k)
            out.append(_values(w.grad))
        return out
    with pytest.warns(RuntimeWarning, match="carries autograd history"):
        _compare(run)


def test_retain_grad_through_a_realized_value():
    x = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    fg.realize(y)
    w = y + 1
    w.retain_grad()
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * (2 * np.array([1.0, 2.0, 3.0]) + 1))


def test_a_custom_optimizer_that_creates_its_state_on_its_first_step():
    class Momentum(_CustomOptimizer):
        def update(self, p, st, lr):
            if "buf" not in st:  # torch style: the first step copies the grad
                st["buf"] = p.grad.clone()
            else:
                st["buf"].mul_(0.9).add_(p.grad)
            p.sub_(st["buf"] * lr)

    _compare(lambda wrap: _train_linear(Momentum, wrap))


def test_an_optimizer_step_compiled_alone_follows_which_grads_exist():
    def run(wrap):
        w1, w2 = nn.Parameter(fg.ones(3)), nn.Parameter(fg.ones(3))
        opt = optim.SGD([w1, w2], lr=0.1)
        step = wrap(opt.step)
        out = []
        for i in range(4):
            opt.zero_grad()
            loss = (w1 * 2).sum() if i < 2 else (w1 * 2 + w2 * 3).sum()  # w2 unfrozen later
            loss.backward()
            step()
            out.append([_values(w1), _values(w2)])
        return out
    _compare(run)


@pytest.mark.parametrize("body", ["clip", "div_", "step_zero_grad", "rescale", "rescale_step"])
def test_grads_changed_by_a_body_without_backward(body):
    from fusegrad.nnlib import utils as nu

    def run(wrap):
        w = nn.Parameter(fg.ones(3))
        opt = optim.SGD([w], lr=0.1)

        def f():
            if body == "clip":
                nu.clip_grad_norm_([w], 0.5)
            elif body == "div_":
                w.grad.div_(4)
            elif body == "step_zero_grad":
                opt.step()
                opt.zero_grad()
            else:
                w.grad = w.grad / 4
                if body == "rescale_step":
                    opt.step()

        f = wrap(f)
        out = []
        for i in range(4):
            (w * (2 + i)).sum().backward()
            f()
            out.append([_values(w), _values(w.grad)])
            if body != "step_zero_grad":
                w.grad = None
        return out
    _compare(run)


def test_clone_inside_a_body_copies_each_calls_value():
    def run(wrap):
        f = wrap(lambda x: x.clone() * 2)

        def g(x):
            y = x.clone()
            y[0] = 5.0
            return y

        g = wrap(g)
        return [[_values(f(fg.full((2,), float(i)))), _values(g(fg.full((3,), float(i))))]
                for i in range(3)]
    _compare(run)


def test_buffers_made_lazily_and_buffers_reassigned_outside():
    class Norm(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("running", None)
            self.fc = nn.Linear(3, 3)
            self.register_buffer("seen", fg.zeros(()))

        def forward(self, x):
            if self.running is None:  # made on the first call
                self.running = x.mean(0).detach()
            else:
                self.running.mul_(0.9).add_(x.mean(0).detach() * 0.1)
            return self.fc(x - self.running)

    def run(wrap):
        m = Norm()
        forward = wrap(m)
        out = []
        with fg.no_grad():
            for i in range(5):
                out.append(_values(forward(fg.ones(2, 3) * (i + 1))))
                m.seen = m.seen + 1  # eagerly, a buffer no compiled entry reads
        if hasattr(forward, "misses"):
            assert forward.misses == 2  # the first call made the buffer: traced again once
        return out + [_values(m.running)]
    _compare(run)


def test_a_buffer_replaced_by_a_body_is_read_fresh_by_other_compiled_functions():
    class Ema(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("avg", fg.zeros(2))

        def forward(self, x):
            self.avg = self.avg * 0.5 + x
            return self.avg

    def run(wrap):
        m = Ema()
        track, read = wrap(m), wrap(lambda x: x + m.avg)
        kept, out = [], []
        for i in range(4):
            kept.append(m.avg)  # the old buffers stay alive
            with fg.no_grad():
                track(fg.ones(2) * i)
                out.append(_values(read(fg.ones(2))))
        return out
    with warnings_ignored():
        _compare(run)


def test_custom_optimizer_state_with_python_values_and_setdefault():
    class Adamish(_CustomOptimizer):
        def update(self, p, st, lr):
            st["step"] = st.get("step", 0) + 1  # a Python int: bias correction changes
            m = st.setdefault("m", fg.zeros_like(p))
            m.mul_(0.9).add_(p.grad * 0.1)
            p.sub_(m * (lr / (1 - 0.9 ** st["step"])))

    with warnings_ignored():
        _compare(lambda wrap: _train_linear(Adamish, wrap))


def test_returning_the_grad_a_body_replaced():
    def run(wrap):
        w = nn.Parameter(fg.ones(3))

        def f(x):
            old = w.grad
            w.grad = None
            (w * x).sum().backward()
            return old, w.grad

        f = wrap(f)
        out = []
        for i in range(4):
            old, new = f(fg.ones(3) * (i + 1))
            out.append([_values(old), _values(new), old is new])
        return out
    _compare(run)


class warnings_ignored:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_replacing_a_tensor_makes_only_the_functions_holding_it_trace_again():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = optim.Adam(m.parameters(), lr=0.01)

    def step(x):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()

    step, other = fg.compile(step), fg.compile(lambda a: a * 2 + 1)
    x = fg.randn(8, 4)
    saved = None
    for i in range(6):
        step(x)
        other(x)
        if i == 2:
            m[1].running_mean = fg.zeros(4)  # read by step: it traces again
        if i == 3:
            saved = saved or opt.state_dict()
            opt.load_state_dict(saved)       # so does loading optimizer state
    assert step.misses == 3 and other.misses == 1
