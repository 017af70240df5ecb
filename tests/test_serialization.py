"""Checkpoints: round trips, the guide's checkpoint example, atomic writes, damaged files."""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.numpy

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad import serialization
from fusegrad.serialization import CheckpointError, load, save


def _model() -> nn.Module:
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _train(model: nn.Module, opt: optim.Optimizer, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x = fg.from_numpy(rng.standard_normal((8, 6)).astype(np.float32))
        y = fg.from_numpy(rng.integers(0, 3, 8))
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def _values(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.parameters()]


# The guide's section 6.3, with fusegrad's names.
def save_optimization_state(model, optimizer, path):
    save({
        'model_state_dict': model.state_dict(),
        'optimizer_state_dict': optimizer.state_dict(),
    }, path)


def load_optimization_state(model, optimizer, path):
    checkpoint = load(path)
    model.load_state_dict(checkpoint['model_state_dict'])
    optimizer.load_state_dict(checkpoint['optimizer_state_dict'])


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_guide_checkpoint_resumes_training_exactly(tmp_path, name):
    kwargs = {'lr': 0.05, 'momentum': 0.9} if name in ("SGD", "RMSprop") else {'lr': 0.05}
    model = _model()
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    _train(model, opt, 3)
    path = tmp_path / "ckpt.safetensors"
    save_optimization_state(model, opt, path)
    _train(model, opt, 3, seed=1)
    expected = _values(model)

    fg.manual_seed(123)  # different initial weights: everything must come from the file
    model2 = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt2 = getattr(optim, name)(model2.parameters(), **{**kwargs, "lr": 1.0})
    load_optimization_state(model2, opt2, path)
    assert opt2.param_groups[0]["lr"] == 0.05
    _train(model2, opt2, 3, seed=1)
    for got, want in zip(_values(model2), expected):
        np.testing.assert_array_equal(got, want)


def test_round_trip_keeps_structure_types_and_values(tmp_path):
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    _train(model, opt, 2)
    obj = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 7, "best": 0.25, "name": "run-1", "done": False, "note": None,
        "history": [1.5, float("inf"), float("-inf"), -0.0],
        "pair": (1, (2.5, "x")),
        "by_int": {0: "a", 3: [1, 2]},
        "by_tuple": {(1, 2): "t", True: "b", None: "n"},
        "$dollar": {"$tensor": "not a tensor"},
        "arrays": [np.arange(4, dtype=np.int32), np.float64(2.5), np.int64(3)],
        "dtypes": [fg.tensor(np.array([1.5, 2.5])), fg.tensor([True, False]),
                   fg.tensor(np.array(3, dtype=np.int64)), fg.tensor(np.arange(6).reshape(2, 3))],
    }
    path = tmp_path / "all.ckpt"
    save(obj, path)
    back = load(path)

    assert list(back) == list(obj)
    for k, v in obj["model"].items():
        np.testing.assert_array_equal(back["model"][k].numpy(), v.numpy())
        assert back["model"][k].dtype == v.dtype and not back["model"][k].requires_grad
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    for i, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            np.testing.assert_array_equal(back["optimizer"]["state"][i][key].numpy(), v.numpy())
            assert back["optimizer"]["state"][i][key].shape == v.shape
    assert (back["epoch"], back["best"], back["name"], back["done"], back["note"]) == \
        (7, 0.25, "run-1", False, None)
    assert type(back["epoch"]) is int and type(back["best"]) is float
    assert back["history"][:3] == [1.5, math.inf, -math.inf]
    assert math.copysign(1, back["history"][3]) == -1
    assert back["pair"] == (1, (2.5, "x"))
    assert back["by_int"] == {0: "a", 3: [1, 2]}
    assert back["by_tuple"] == {(1, 2): "t", True: "b", None: "n"}
    assert back["$dollar"] == {"$tensor": "not a tensor"}
    np.testing.assert_array_equal(back["arrays"][0], np.arange(4, dtype=np.int32))
    assert isinstance(back["arrays"][0], np.ndarray) and back["arrays"][0].dtype == np.int32
    assert back["arrays"][1:] == [2.5, 3]
    for got, want in zip(back["dtypes"], obj["dtypes"]):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_nan_round_trips():
    assert math.isnan(serialization.loads(serialization.dumps({"x": float("nan")}))["x"])


def test_a_tensor_saved_twice_is_stored_once_and_loaded_as_one():
    t = fg.tensor([1.0, 2.0])
    data = serialization.dumps({"a": t, "b": [t]})
    back = serialization.loads(data)
    assert back["a"] is back["b"][0]
    assert len(safetensors.numpy.load(data)) == 1


def test_pending_tensors_are_computed_when_saved():
    a = fg.tensor([1.0, 2.0])
    pending = a * 3 + 1
    back = serialization.loads(serialization.dumps({"x": pending}))
    np.testing.assert_array_equal(back["x"].numpy(), [4.0, 7.0])


def test_parameters_that_require_grad_are_saved_by_value():
    w = nn.Parameter(fg.tensor([1.0, -1.0]))
    back = serialization.loads(serialization.dumps([w]))
    np.testing.assert_array_equal(back[0].numpy(), [1.0, -1.0])


def test_file_is_plain_safetensors_with_named_tensors(tmp_path):
    model = _model()
    path = tmp_path / "m.safetensors"
    save({"model": model.state_dict()}, path)
    arrays = safetensors.numpy.load_file(str(path))
    assert sorted(arrays) == sorted(f"model.{k}" for k in model.state_dict())
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    metadata = json.loads(raw[8:8 + n])["__metadata__"]
    assert metadata["fusegrad.format"] == "fusegrad.checkpoint"
    assert json.loads(metadata["fusegrad.structure"])["model"]["0.weight"] == \
        {"$tensor": "model.0.weight"}


def test_file_objects(tmp_path):
    buf = io.BytesIO()
    save({"w": fg.tensor([1.0, 2.0]), "step": 3}, buf)
    buf.seek(0)
    back = load(buf)
    assert back["step"] == 3
    np.testing.assert_array_equal(back["w"].numpy(), [1.0, 2.0])


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    save({"w": fg.tensor([1.0]), "meta": {"a": (1, 2)}}, path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    load(path)


def test_unsupported_objects_raise_type_error_naming_where():
    with pytest.raises(TypeError, match=r"cannot save set at checkpoint\['opt'\]\['x'\]"):
        serialization.dumps({"opt": {"x": {1, 2}}})
    with pytest.raises(TypeError, match="cannot save an array of dtype float16"):
        serialization.dumps({"a": np.zeros(2, np.float16)})


# ---------------------------------------------------------------------------- atomic writes
def _tmp_files(folder) -> list[str]:
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_a_crash_while_saving_leaves_the_old_file_intact(tmp_path, monkeypatch, failing):
    path = tmp_path / "ckpt.safetensors"
    save({"version": 1, "w": fg.tensor([1.0, 2.0])}, path)
    old = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    if failing == "replace":
        monkeypatch.setattr(serialization.os, "replace", crash)
    elif failing == "fsync":
        monkeypatch.setattr(serialization.os, "fsync", crash)
    else:  # the write itself dies half way through
        real_fdopen = os.fdopen

        class HalfWriter(io.RawIOBase):
            def __init__(self, fd, *args, **kwargs):
                self.f = real_fdopen(fd, "wb")

            def write(self, data):
                self.f.write(bytes(data[: len(data) // 2]))
                self.f.flush()
                raise OSError("simulated crash")

            def close(self):
                self.f.close()
                super().close()

        monkeypatch.setattr(serialization.os, "fdopen", HalfWriter)

    with pytest.raises(OSError, match="simulated crash"):
        save({"version": 2, "w": fg.tensor([3.0, 4.0, 5.0])}, path)
    assert path.read_bytes() == old
    assert load(path)["version"] == 1
    assert _tmp_files(tmp_path) == []


def test_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpt"
    save({"v": 1}, path)
    save({"v": 2}, str(path))
    assert load(path) == {"v": 2}
    assert _tmp_files(tmp_path) == []


def test_saved_file_gets_the_usual_permissions(tmp_path):
    path = tmp_path / "ckpt"
    save({"v": 1}, path)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


# ---------------------------------------------------------------------------- damaged files
def _checkpoint_bytes() -> bytes:
    model = _model()
    return serialization.dumps({"model": model.state_dict(), "epoch": 1})


@pytest.mark.parametrize("cut", [0, 4, 8, 30, -100, -1])
def test_truncated_files_raise_checkpoint_error(tmp_path, cut):
    data = _checkpoint_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load(path)
    assert isinstance(info.value, ValueError)
    assert any(w in str(info.value) for w in ("truncated", "empty", "not a fusegrad"))


@pytest.mark.parametrize("content", [
    b"hello, this is a text file\n" * 10,
    bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8)),
    struct.pack("<Q", 2) + b"[]",
    struct.pack("<Q", 10) + b"\xff" * 10,
])
def test_garbage_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "garbage.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a fusegrad checkpoint"):
        load(path)


def test_other_safetensors_files_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="fusegrad.save did not write"):
        load(path)


def test_damaged_tensor_data_is_detected(tmp_path):
    data = bytearray(_checkpoint_bytes())
    path = tmp_path / "extra.ckpt"
    path.write_bytes(bytes(data) + b"\x00" * 3)  # trailing bytes: not the file that was saved
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.ckpt")
