"""Storage and autograd-graph lifetime: copies do not alias, graphs are freed by backward."""
import numpy as np
import pytest
import torch

import fusegrad as fg


def test_clone_has_its_own_storage():
    x = fg.tensor([1.0, 2.0, 3.0])
    y = x.clone()
    y.numpy()[0] = 100.0
    assert x.numpy()[0] == 1.0


def test_a_result_equal_to_an_input_is_a_copy():
    x = fg.tensor([1.0, 2.0])
    y = x + 0  # simplified to x by the passes; still a tensor of its own
    y.numpy()[0] = 5.0
    assert x.numpy()[0] == 1.0


def test_load_state_dict_copies():
    import fusegrad.nnlib as nn
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    b.weight.detach().numpy()[0, 0] = 42.0
    assert a.weight.detach().numpy()[0, 0] != 42.0


def test_load_state_dict_is_copied_without_a_program():
    from fusegrad.tracer.realize import STATS
    import fusegrad.nnlib as nn
    model = nn.Linear(3, 2)
    state = {"weight": fg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)),
             "bias": fg.tensor([7.0, 8.0])}
    before = STATS.realizations
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.weight.detach().numpy(), state["weight"].numpy())
    np.testing.assert_array_equal(model.bias.detach().numpy(), [7.0, 8.0])
    assert STATS.realizations == before


@pytest.mark.parametrize("lib", [torch, fg], ids=["torch", "fusegrad"])
def test_a_copy_and_the_values_around_it_realized_together(lib):
    a, b = lib.tensor([1.0, 2.0]), lib.tensor([5.0, 6.0])
    old_b = b * 1  # reads b before the copy overwrites it
    with lib.no_grad():
        b.copy_(a)
        a.add_(10.0)  # overwrites the copy's source after the copy
    assert old_b.tolist() == [5.0, 6.0]
    assert b.tolist() == [1.0, 2.0]
    assert a.tolist() == [11.0, 12.0]


def test_relu_propagates_nan_and_has_zero_gradient_at_zero():
    x = fg.tensor([float("nan"), 0.0, -1.0, 2.0], requires_grad=True)
    y = fg.relu(x)
    y.sum().backward()
    out = y.detach().numpy()
    assert np.isnan(out[0]) and list(out[1:]) == [0.0, 0.0, 2.0]
    assert list(x.grad.numpy()[1:]) == [0.0, 0.0, 1.0]


def test_second_backward_through_a_realized_graph_needs_retain_graph():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.item()  # realized: backward differentiates through the saved expression
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()
    loss2 = (x * 3).sum()
    loss2.item()
    loss2.backward(retain_graph=True)
    loss2.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 6, 4 + 6])


def test_create_graph_is_refused():
    x = fg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="create_graph"):
        (x * x).sum().backward(create_graph=True)


def _backward_twice(lib, case: str):
    """One way of calling backward twice; returns x.grad, or the error it raised."""
    x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
    try:
        if case == "unread":          # the loss was never realized
            loss = x.exp().sum()
            loss.backward()
            loss.backward()
        elif case == "linear-with-scalar":   # torch saves the 2 of x * 2 as well
            loss = (x * 2 + 1).sum()
            loss.backward()
            loss.backward()
        elif case == "nothing-saved":  # sum and add need no saved values: torch allows it
            loss = (x + 1).sum()
            loss.backward()
            loss.backward()
        elif case == "detached-part":  # what lies below detach() is not in the autograd graph
            loss = (x.detach().exp() + x).sum()
            loss.backward()
            loss.backward()
        elif case == "retained":
            loss = (x * x).sum()
            loss.backward(retain_graph=True)
            loss.backward()
        elif case == "through-an-intermediate":
            h = x.tanh()
            h.sum().backward()
            (h * 3).sum().backward()
        elif case == "recomputed":     # a new graph over the same leaves is a new graph
            for _ in range(2):
                loss = (x * x).sum()
                loss.backward()
        return x.grad.detach().numpy()
    except RuntimeError as e:
        return e


@pytest.mark.parametrize("case", ["unread", "linear-with-scalar", "nothing-saved", "detached-part",
                                  "retained", "through-an-intermediate", "recomputed"])
def test_backward_twice_behaves_as_in_torch(case):
    import torch
    got, want = _backward_twice(fg, case), _backward_twice(torch, case)
    if isinstance(want, RuntimeError):
        assert isinstance(got, RuntimeError), f"torch raised {want!r}, fusegrad gave {got}"
        assert "second time" in str(got) and "retain_graph=True" in str(got)
        assert "test_storage.py" in str(got)  # the user's line
    else:
        assert not isinstance(got, Exception), got
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("lib", [fg, torch], ids=["fusegrad", "torch"])
def test_detach_of_a_pending_update_shares_the_storage(lib):
    """``detach()`` of a tensor whose in-place update is not computed yet (the padding row of
    an Embedding zeroed at construction) still aliases it, as torch's always does."""
    w = lib.nn.Parameter(lib.tensor(np.ones((3, 2), np.float32)))
    with lib.no_grad():
        w[0] = 0.0  # pending in fusegrad
        alias = w.detach()
        w.copy_(lib.full((3, 2), 2.0))
        w.copy_(alias)  # the alias reads the value just written, so nothing changes
        alias_then = alias.sum().item()
        w.mul_(3.0)
    assert w.sum().item() == 36.0
    assert alias_then == 12.0 and alias.sum().item() == 36.0


def test_detach_inplace_keeps_a_pending_value():
    w = fg.ones(3)
    w.mul_(2.0)
    w.detach_()
    assert w.tolist() == [2.0, 2.0, 2.0]


def test_a_failed_realization_does_not_fail_every_later_one():
    w = fg.randn(4, 3, requires_grad=True)
    before = fg.ones(3) * 2           # pending when the bad program runs
    loss = w[fg.tensor([0, 1]) * 5].sum()   # index 5 of 4 rows: found when the program runs
    with pytest.raises(IndexError, match="out of range"):
        loss.item()
    assert before.tolist() == [2.0, 2.0, 2.0]
    assert (fg.ones(2) + 1).tolist() == [2.0, 2.0]
    np.testing.assert_allclose((w * 1).sum().item(), w.detach().numpy().sum(), rtol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        loss.item()                   # the culprit raises again when asked for
