"""The everyday API of issue 12 beyond op parity: grad modes, masked assignment, refusals and
errors (torch's error types, with the user's line)."""
import os

import numpy as np
import pytest
import torch

import fusegrad as fg

HERE = os.path.basename(__file__)


def _raises(kind, fn, *words):
    with pytest.raises(kind) as e:
        fn()
    msg = str(e.value)
    assert HERE in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_inference_mode_context_and_decorators():
    x = fg.ones(2, requires_grad=True)
    with fg.inference_mode():
        assert not fg.is_grad_enabled() and fg.is_inference_mode_enabled()
        assert not (x * 2).requires_grad
    assert fg.is_grad_enabled() and not fg.is_inference_mode_enabled()

    @fg.inference_mode
    def bare():
        return (x * 2).requires_grad

    @fg.inference_mode()
    def called():
        return (x * 2).requires_grad

    @fg.inference_mode(False)
    def off():
        return (x * 2).requires_grad

    assert (bare(), called(), off()) == (False, False, True)
    assert bare.__name__ == "bare"


def test_setitem_with_bool_mask_is_masked_fill():
    a = np.array([[1.0, -2.0], [3.0, -4.0]], dtype=np.float32)
    x, t = fg.tensor(a), torch.tensor(a)
    x[x < 0] = 0.5
    t[t < 0] = 0.5
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    v = fg.tensor([2.0], requires_grad=True)
    y = fg.zeros(2, 2)
    y[fg.tensor([[True, False], [True, True]])] = v
    (y * fg.tensor([[1.0, 10.0], [100.0, 1000.0]])).sum().backward()
    assert v.grad.tolist() == [1101.0]


def test_data_dependent_shapes_are_refused_with_an_alternative():
    x = fg.tensor([1.0, -1.0])
    _raises(NotImplementedError, lambda: x.nonzero(), "nonzero", "data-dependent", "where")
    _raises(NotImplementedError, lambda: fg.masked_select(x, x > 0), "masked_select",
            "masked mean")
    _raises(IndexError, lambda: x[x > 0], "boolean mask", "where(mask, x, 0)")
    _raises(IndexError, lambda: x.__setitem__(x > 0, fg.ones(1, 2) * fg.ones(2, 1)),
            "one-element", "where(mask, values, x)")


def test_errors_name_the_op_and_line():
    i, x = fg.tensor([3, 4]), fg.ones(2, 3)
    _raises(RuntimeError, lambda: i % fg.tensor([1, 0]), "remainder", "ZeroDivisionError")
    _raises(RuntimeError, lambda: i // 0, "floor_divide", "ZeroDivisionError")
    _raises(NotImplementedError, lambda: fg.tensor([True]) % fg.tensor([True]), "bool")
    _raises(RuntimeError, lambda: x.masked_fill(x > 0.5, fg.ones(2)), "0-dimensional")
    _raises(RuntimeError, lambda: x.masked_fill(fg.ones(2, 3), 0.0), "boolean masks")
    _raises(ValueError, lambda: x.masked_fill(fg.ones(3, 3) > 0, 0.0), "[3, 3]", "[2, 3]")
    _raises(ValueError, lambda: fg.ones(3).triu(), "triu", "at least 2")
    _raises(RuntimeError, lambda: x.topk(4), "topk", "k (4)")
    _raises(RuntimeError, lambda: x.roll((1, 2), 0), "roll", "align")
    _raises(RuntimeError, lambda: fg.einsum("ij,jk->ik", x), "einsum", "2 operand")
    _raises(RuntimeError, lambda: fg.einsum("ijk->i", x), "einsum", "'ijk'")
    _raises(ValueError, lambda: fg.einsum("ij,jk->ik", x, fg.ones(2, 2)), "einsum", "'j'")
    _raises(RuntimeError, lambda: i.norm(), "vector_norm", "floating point")
    _raises(NotImplementedError, lambda: x.norm("nuc"), "nuclear")
    _raises(RuntimeError, lambda: fg.div(x, 2, rounding_mode="round"), "rounding_mode")
    _raises(IndexError, lambda: x.cumsum(2), "cumsum", "out of range")


def test_sort_documents_its_quadratic_cost():
    assert "O(n^2)" in fg.sort.__doc__ and "O(n^2)" in fg.topk.__doc__
