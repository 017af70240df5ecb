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


MIXED_DTYPES = {
    "linear_float64_input": lambda lib, nn: nn.Linear(2, 2)(lib.ones(3, 2, dtype=lib.float64)),
    "matmul_int64_float32": lambda lib, nn: lib.ones(2, 2, dtype=lib.int64) @ lib.ones(2, 2),
    "matmul_float32_float64": lambda lib, nn: lib.ones(2) @ lib.ones(2, 2, dtype=lib.float64),
    "bmm_float64_float32": lambda lib, nn: lib.bmm(lib.ones(1, 2, 2, dtype=lib.float64),
                                                   lib.ones(1, 2, 2)),
    "conv2d_float64_input": lambda lib, nn: nn.Conv2d(2, 2, 3)(lib.ones(1, 2, 5, 5,
                                                                        dtype=lib.float64)),
    "layer_norm_float64_input": lambda lib, nn: nn.LayerNorm(2)(lib.ones(1, 2, dtype=lib.float64)),
    "batch_norm_float64_input": lambda lib, nn: nn.BatchNorm1d(2)(lib.ones(3, 2,
                                                                           dtype=lib.float64)),
    "group_norm_float64_input": lambda lib, nn: nn.GroupNorm(1, 2)(lib.ones(3, 2,
                                                                            dtype=lib.float64)),
    "lstm_float64_input": lambda lib, nn: nn.LSTM(2, 3)(lib.ones(1, 1, 2, dtype=lib.float64)),
    "lstm_cell_float64_input": lambda lib, nn: nn.LSTMCell(2, 3)(lib.ones(1, 2,
                                                                          dtype=lib.float64)),
}


@pytest.mark.parametrize("name", list(MIXED_DTYPES))
def test_mixed_dtypes_raise_as_in_torch(name):
    """Where torch refuses to promote (a float64 batch into a float32 model, int @ float), so
    do we: the same exception type, naming both dtypes and the user's line."""
    import torch
    make = MIXED_DTYPES[name]
    with pytest.raises(Exception) as want:
        make(torch, torch.nn)
    with pytest.raises(type(want.value)) as got:
        make(fg, nn)
    msg = str(got.value)
    assert "float64" in msg or "int64" in msg, msg
    assert "float32" in msg and f"{HERE}:" in msg, msg


def test_same_dtypes_still_run():
    model = nn.Linear(2, 2).double()
    assert model(fg.ones(3, 2, dtype=fg.float64)).dtype == fg.float64
    assert (fg.ones(2, 2, dtype=fg.float64) @ fg.ones(2, 2, dtype=fg.float64)).dtype == fg.float64


def test_error_types_are_public_in_fusegrad_errors():
    import fusegrad.backends.numba_cpu.scalar_ops as codegen
    import fusegrad.errors as errors
    import fusegrad.ir.errors as ir_errors
    assert fg.errors is errors
    for name in ("FusegradError", "ShapeError", "DTypeError", "CaptureError", "CheckpointError",
                 "CodegenError"):
        assert issubclass(getattr(errors, name), errors.FusegradError)
        assert getattr(fg, name) is getattr(errors, name)
    assert issubclass(errors.DTypeError, TypeError) and issubclass(errors.DTypeError, RuntimeError)
    assert issubclass(errors.ShapeError, ValueError)
    assert issubclass(errors.CheckpointError, ValueError)
    assert ir_errors.ShapeError is errors.ShapeError and ir_errors.with_location is \
        errors.with_location
    assert codegen.CodegenError is errors.CodegenError
    with pytest.raises(errors.ShapeError):
        fg.ones(3, 4) + fg.ones(5)
