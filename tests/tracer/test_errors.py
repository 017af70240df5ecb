"""Bad input raises at trace time with the op, the shapes and the user's file:line."""
import os

import pytest

import fusegrad as fg
import fusegrad.nnlib as nn

HERE = os.path.basename(__file__)


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return i
    raise AssertionError(marker)


def _assert_names_line(excinfo, marker: str, *words: str) -> None:
    msg = str(excinfo.value)
    assert f"{HERE}:{_line_of(marker)}" in msg, msg
    for w in words:
        assert w in msg, msg


def test_add_shape_mismatch():
    a, b = fg.ones(3, 4), fg.ones(5)
    with pytest.raises(ValueError) as e:
        a + b  # marker:add
    _assert_names_line(e, "marker:add", "add", "[3, 4]", "[5]", "dim -1")


def test_matmul_shape_mismatch():
    a, b = fg.ones(3, 4), fg.ones(5, 2)
    with pytest.raises(ValueError) as e:
        a @ b  # marker:matmul
    _assert_names_line(e, "marker:matmul", "matmul", "[3, 4]", "[5, 2]")


def test_cat_shape_mismatch():
    a, b = fg.ones(3, 4), fg.ones(2, 5)
    with pytest.raises(ValueError) as e:
        fg.cat([a, b], dim=0)  # marker:cat
    _assert_names_line(e, "marker:cat", "cat", "[3, 4]", "[2, 5]", "dimension 0")


def test_view_bad_shape():
    a = fg.ones(3, 4)
    with pytest.raises(ValueError) as e:
        a.view(5, 3)  # marker:view
    _assert_names_line(e, "marker:view", "view", "[5, 3]", "12")


def test_cross_entropy_float_targets():
    logits, target = fg.randn(4, 3), fg.tensor([0.0, 1.0, 2.0, 1.0])
    with pytest.raises(TypeError) as e:
        nn.CrossEntropyLoss()(logits, target)  # marker:ce
    _assert_names_line(e, "marker:ce", "cross_entropy", "float32", "integer")


def test_backward_on_non_scalar_needs_gradient():
    x = fg.ones(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError) as e:
        y.backward()  # marker:backward
    _assert_names_line(e, "marker:backward", "scalar", "[3]")


def test_error_is_raised_when_traced_not_when_realized():
    a = fg.ones(2, 2)
    with pytest.raises(ValueError):
        a.reshape(3)  # nothing has been realized yet: the error comes from tracing
