"""Storage and autograd-graph lifetime: copies do not alias, graphs are freed by backward."""
import numpy as np
import pytest

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
