"""The Tensor API as PyTorch users know it: creation, reading values, realization, autograd state.

Every test runs on each backend (the ``backend`` fixture is autouse).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import BACKENDS, using_backend

import fusegrad as fg
from fusegrad.tracer.realize import STATS

DTYPES = [(fg.float32, torch.float32), (fg.float64, torch.float64), (fg.int64, torch.int64),
          (fg.int32, torch.int32), (fg.bool, torch.bool)]


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request):
    with using_backend(request.param):
        yield request.param


def _same(got: fg.Tensor, want: torch.Tensor) -> None:
    assert str(got.dtype).rsplit(".", 1)[-1] == str(want.dtype).rsplit(".", 1)[-1]
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy())


# ---------------------------------------------------------------------------- creation
@pytest.mark.parametrize("data", [[1, 2, 3], [1.0, 2.5], [[1, 2], [3, 4]], [True, False], 3, 2.5,
                                  True, np.arange(6, dtype=np.int32).reshape(2, 3),
                                  np.linspace(0, 1, 4), np.float32(1.5), np.float64(1.5),
                                  np.int32(4)],
                         ids=lambda d: type(d).__name__ + str(np.shape(d)))
def test_tensor_infers_dtype_and_shape_like_torch(data):
    _same(fg.tensor(data), torch.tensor(data))


@pytest.mark.parametrize("fg_dt,th_dt", DTYPES, ids=lambda d: str(d))
def test_tensor_with_dtype(fg_dt, th_dt):
    _same(fg.tensor([[0, 1.5], [2, -3]], dtype=fg_dt), torch.tensor([[0, 1.5], [2, -3]], dtype=th_dt))


@pytest.mark.parametrize("fg_dt,th_dt", DTYPES, ids=lambda d: str(d))
def test_filled_creation_with_dtype(fg_dt, th_dt):
    _same(fg.zeros(2, 3, dtype=fg_dt), torch.zeros(2, 3, dtype=th_dt))
    _same(fg.ones((2, 3), dtype=fg_dt), torch.ones((2, 3), dtype=th_dt))
    _same(fg.full((3,), 1, dtype=fg_dt), torch.full((3,), 1, dtype=th_dt))
    assert fg.empty(2, 3, dtype=fg_dt).dtype == fg_dt
    assert fg.empty(2, 3, dtype=fg_dt).shape == (2, 3)


def test_filled_creation_defaults():
    _same(fg.zeros(2, 3), torch.zeros(2, 3))
    _same(fg.ones([4]), torch.ones([4]))
    _same(fg.zeros(()), torch.zeros(()))
    for value in (7, 2.5, True):
        _same(fg.full((2, 2), value), torch.full((2, 2), value))
    assert fg.empty(3, 1).dtype == fg.float32


@pytest.mark.parametrize("args", [(5,), (1, 4), (5, 0, -2), (0, 1, 0.25), (5.0,), (-1.0, 1.0, 0.5)],
                         ids=str)
def test_arange(args):
    _same(fg.arange(*args), torch.arange(*args))


def test_arange_with_dtype():
    _same(fg.arange(4, dtype=fg.float64), torch.arange(4, dtype=torch.float64))


@pytest.mark.parametrize("fg_dt,th_dt", DTYPES[:2], ids=str)
def test_random_creation(fg_dt, th_dt):
    r = fg.rand(3, 4, dtype=fg_dt).numpy()
    assert r.dtype == np.dtype(str(fg_dt).rsplit(".", 1)[-1]) and r.shape == (3, 4)
    assert (0 <= r).all() and (r < 1).all()
    n = fg.randn(200, dtype=fg_dt).numpy()
    assert n.shape == (200,) and abs(n.mean()) < 0.3 and 0.7 < n.std() < 1.3


def test_tensor_from_tensor_keeps_dtype():
    _same(fg.tensor(fg.tensor([1.0, 2.0], dtype=fg.float64)),
          torch.tensor([1.0, 2.0], dtype=torch.float64))
    _same(fg.tensor(fg.tensor([1, 2], dtype=fg.int32)), torch.tensor([1, 2], dtype=torch.int32))


def test_from_numpy_keeps_dtype_and_values():
    for arr in (np.arange(6.0).reshape(2, 3), np.arange(4, dtype=np.int32),
                np.array([True, False]), np.float32(2.0) * np.ones((2, 2), np.float32)):
        _same(fg.from_numpy(arr), torch.from_numpy(arr))


def test_like_creation():
    x_np = np.arange(6.0).reshape(2, 3)
    x, tx = fg.from_numpy(x_np), torch.from_numpy(x_np)
    _same(fg.zeros_like(x), torch.zeros_like(tx))
    _same(fg.ones_like(x, dtype=fg.int32), torch.ones_like(tx, dtype=torch.int32))
    _same(fg.full_like(x, 7), torch.full_like(tx, 7))
    for fn in (fg.empty_like, fg.rand_like, fg.randn_like):
        out = fn(x)
        assert out.shape == (2, 3) and out.dtype == fg.float64


def test_requires_grad_at_creation():
    assert fg.zeros(2, requires_grad=True).requires_grad
    assert fg.tensor([1.0], requires_grad=True).is_leaf
    with pytest.raises(RuntimeError):
        fg.tensor([1, 2], requires_grad=True)


def test_manual_seed_repeats_random_numbers():
    fg.manual_seed(123)
    first = [fg.rand(3).numpy(), fg.randn(2, 2).numpy(), fg.randint(0, 10, (4,)).numpy()]
    fg.manual_seed(123)
    second = [fg.rand(3).numpy(), fg.randn(2, 2).numpy(), fg.randint(0, 10, (4,)).numpy()]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(fg.rand(3).numpy(), first[0])


# ---------------------------------------------------------------------------- reading values
def test_item_numpy_tolist():
    x = fg.tensor([[1.5, 2.0], [3.0, -4.0]]) * 2
    assert x.sum().item() == pytest.approx(5.0)
    assert isinstance(x[0, 0].item(), float)
    assert fg.tensor([3]).item() == 3 and isinstance(fg.tensor([3]).item(), int)
    assert fg.tensor(True).item() is True
    np.testing.assert_array_equal(x.numpy(), [[3.0, 4.0], [6.0, -8.0]])
    assert x.tolist() == [[3.0, 4.0], [6.0, -8.0]]
    assert fg.tensor(2.5).tolist() == 2.5
    with pytest.raises(ValueError):
        x.item()


def test_numpy_of_tensor_requiring_grad_raises():
    x = fg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    assert x.detach().numpy().tolist() == [1.0]


@pytest.mark.parametrize("make,text", [
    (lambda: fg.tensor([1.5, 2.0]), "tensor([1.5, 2. ])"),
    (lambda: fg.tensor([1, 2]) * 2, "tensor([2, 4])"),
    (lambda: fg.tensor(2.5), "tensor(2.5)"),
    (lambda: fg.tensor([1.0], dtype=fg.float64), "tensor([1.], dtype=fusegrad.float64)"),
    (lambda: fg.tensor([1.0], requires_grad=True), "tensor([1.], requires_grad=True)"),
    (lambda: fg.tensor([True]), "tensor([ True])"),
], ids=["float", "int", "0d", "float64", "requires_grad", "bool"])
def test_repr(make, text):
    assert repr(make()) == text
    assert str(make()) == text


# ---------------------------------------------------------------------------- realization
def test_realize_several_tensors_runs_one_program():
    a = fg.ones(2, 3) * 2
    b = a + 1
    c = (b * b).sum()
    before = STATS.realizations
    fg.realize(a, b, c)
    assert STATS.realizations == before + 1
    assert a.numpy().tolist() == [[2.0] * 3] * 2 and c.item() == 54.0
    assert STATS.realizations == before + 1  # reading realized values computes nothing


def test_reading_one_pending_tensor_realizes_all_pending():
    a = fg.arange(3.0) * 2
    b = a + 1
    before = STATS.realizations
    assert b.tolist() == [1.0, 3.0, 5.0]
    assert a.tolist() == [0.0, 2.0, 4.0]
    assert STATS.realizations == before + 1


# ---------------------------------------------------------------------------- autograd
def test_grad_accumulates_across_backward_calls():
    for lib in (fg, torch):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        (x * x).sum().backward()
        (x * 3).sum().backward()
        assert x.grad.tolist() == [5.0, 7.0, 9.0]


def test_backward_with_gradient_argument():
    x = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(gradient=fg.tensor([1.0, 0.0, -2.0]))
    assert x.grad.tolist() == [2.0, 0.0, -12.0]


def test_backward_needs_gradient_for_non_scalar_and_requires_grad():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        fg.tensor([1.0]).sum().backward()


def test_backward_through_a_realized_intermediate():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.realize()
    (y * y).sum().backward()
    assert x.grad.tolist() == [18.0, 36.0]


def test_grad_of_non_leaf_is_none_unless_retained():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y, z = x * 3, x * 2
    z.retain_grad()
    (y * z).sum().backward()
    assert y.grad is None
    assert z.grad.tolist() == [3.0, 6.0]


def test_detach():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    (d * x).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0]


def test_no_grad_context_manager():
    x = fg.tensor([1.0], requires_grad=True)
    with fg.no_grad():
        y = x * 2
        assert not fg.is_grad_enabled()
        with fg.enable_grad():
            assert (x * 2).requires_grad
    assert fg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    assert (x * 2).requires_grad


def test_no_grad_decorator():
    @fg.no_grad()
    def double(t):
        return t * 2

    x = fg.tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad
    assert fg.is_grad_enabled()


def test_requires_grad_propagation():
    p = fg.tensor([1.0, 2.0], requires_grad=True)
    q = fg.tensor([3.0, 4.0])
    assert (p + q).requires_grad and not (p + q).is_leaf
    assert not (q * 2).requires_grad
    assert p.sum().requires_grad and p.double().requires_grad
    # integer and bool results carry no gradient
    assert not (p > 1).requires_grad and not p.argmax().requires_grad
    assert not p.long().requires_grad
    assert not p.data.requires_grad and not p.detach().requires_grad
    assert fg.tensor([1.0]).requires_grad_().requires_grad


def test_inplace_ops_keep_identity():
    a = fg.tensor([1.0, 2.0])
    ident = id(a)
    a.add_(1)
    a.sub_(0.5)
    a.mul_(2)
    assert a.tolist() == [3.0, 5.0] and id(a) == ident
    a.zero_()
    assert a.tolist() == [0.0, 0.0]
    a.copy_(fg.tensor([5.0, 6.0]))
    assert a.tolist() == [5.0, 6.0] and id(a) == ident


def test_inplace_does_not_change_earlier_results():
    a = fg.tensor([1.0, 2.0])
    b = a * 2
    a.add_(1)
    assert b.tolist() == [2.0, 4.0] and a.tolist() == [2.0, 3.0]


def test_inplace_on_leaf_requiring_grad_raises():
    w = fg.tensor([1.0, 2.0], requires_grad=True)
    for op in (lambda: w.add_(1), lambda: w.mul_(2), lambda: w.zero_(),
               lambda: w.copy_(fg.tensor([0.0, 0.0]))):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            op()
    assert w.tolist() == [1.0, 2.0]


def test_setitem_on_leaf_requiring_grad_raises():
    w = fg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0] = 3.0
    with fg.no_grad():
        w[0] = 3.0
    assert w.tolist() == [3.0, 2.0] and w.is_leaf


def test_setitem_is_differentiated():
    for lib in (fg, torch):
        x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
        y = x * 2
        y[0, 1] = 10.0
        y[:, ::2] = lib.tensor([7.0, 8.0])
        z = x * 1
        z[1] = x[0] * 3
        assert y.tolist() == [[7.0, 10.0, 8.0], [7.0, 10.0, 8.0]]
        ((y * y).sum() + (z * z).sum()).backward()
        assert x.grad.tolist() == [[20.0, 40.0, 60.0], [0.0, 40.0, 0.0]]


@pytest.mark.parametrize("key", [True, False, (True, 1), (1, False), (False, slice(None))],
                         ids=repr)
def test_setitem_with_a_bool_index(key):
    values = []
    for lib in (fg, torch):
        x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        x[key] = 9.0
        values.append(x.tolist())
    assert values[0] == values[1]


@pytest.mark.parametrize("key", [slice(None), (slice(None), slice(None)), Ellipsis,
                                 (slice(None), slice(0, 2))], ids=repr)
def test_whole_dim_slices_give_a_new_tensor_in_the_graph(key):
    results = []
    for lib in (fg, torch):
        x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
        y = x[key]
        assert y is not x and not y.is_leaf and y.requires_grad
        (y * y).sum().backward()
        results.append((y.tolist(), x.grad.tolist()))
    assert results[0] == results[1]


def test_bool_index_beside_non_adjacent_advanced_index_is_refused():
    with pytest.raises(IndexError, match="adjacent"):
        fg.ones(3, 4)[True, 1, None, False]


@pytest.mark.parametrize("update,grad", [
    (lambda t, w: t.add_(w), [2.0, 4.0]),
    (lambda t, w: t.copy_(w * 3), [18.0, 36.0]),
    (lambda t, w: t.__setitem__(slice(None), w * 3), [18.0, 36.0]),
], ids=["add_", "copy_", "setitem"])
def test_inplace_with_grad_operand_joins_the_graph(update, grad):
    for lib in (fg, torch):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        t = lib.zeros(2)
        update(t, w)
        assert t.requires_grad and not t.is_leaf
        (t * t).sum().backward()
        assert w.grad.tolist() == grad


def test_inplace_with_grad_operand_under_no_grad_stays_a_leaf():
    w = fg.tensor([1.0, 2.0], requires_grad=True)
    t = fg.zeros(2)
    with fg.no_grad():
        t.copy_(w)
        t.add_(w)
    assert not t.requires_grad and t.is_leaf and t.tolist() == [2.0, 4.0]


def test_clone_is_differentiable():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = x.clone()
    assert y.requires_grad and not y.is_leaf
    y.add_(1)
    assert x.tolist() == [1.0, 2.0]
    (y * y).sum().backward()
    assert x.grad.tolist() == [4.0, 6.0]


def test_inplace_on_leaf_under_no_grad_keeps_it_a_leaf():
    w = fg.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with fg.no_grad():
        w.sub_(0.25 * w.grad)
    assert w.is_leaf and w.requires_grad
    assert w.tolist() == [0.5, 1.0]
    w.grad.zero_()
    (w * w).sum().backward()
    assert w.grad.tolist() == [1.0, 2.0]


def test_inplace_on_non_leaf_is_differentiated():
    v = fg.tensor([1.0, 2.0], requires_grad=True)
    u = v * 2
    u.mul_(3)
    u.add_(v)
    u.sum().backward()
    assert v.grad.tolist() == [7.0, 7.0]


def test_data_assignment_keeps_identity_and_leaf_state():
    w = fg.tensor([1.0, 2.0], requires_grad=True)
    ident = id(w)
    w.data = fg.tensor([3.0, 4.0])
    assert id(w) == ident and w.is_leaf and w.requires_grad
    assert w.tolist() == [3.0, 4.0]
    (w * w).sum().backward()
    assert w.grad.tolist() == [6.0, 8.0]


def test_inplace_ops_on_data_update_the_tensor():
    for lib in (fg, torch):
        p = lib.tensor([1.0, 2.0], requires_grad=True)
        (p * p).sum().backward()
        p.data.add_(p.grad, alpha=-0.25)
        assert p.tolist() == [0.5, 1.0] and p.is_leaf and p.requires_grad
        p.grad.data.zero_()
        assert p.grad.tolist() == [0.0, 0.0]
        (p * p).sum().backward()
        assert p.grad.tolist() == [1.0, 2.0]
