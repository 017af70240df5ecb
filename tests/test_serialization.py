"""Checkpoints: round trips, the guide's checkpoint example, atomic writes, damaged files."""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---------------------------------------------------------------------------- killed writers
_SLOW_SAVE = r"""
import os, sys, time
import numpy as np
import fusegrad as fg
from fusegrad import serialization

def stall(fd):  # the bytes are written; the writer is killed before it renames them
    print("writing", flush=True)
    time.sleep(600)

serialization.os.fsync = stall
fg.save({"w": np.ones((1000, 1000), np.float32)}, sys.argv[1])
"""


def _killed_mid_write(path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    finally:
        proc.kill()   # SIGKILL: no handler, no clean-up
        proc.wait()


def test_temporaries_of_killed_writers_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    _killed_mid_write(path)
    first = _tmp_files(tmp_path)
    assert len(first) == 1 and os.path.getsize(tmp_path / first[0]) > 4_000_000
    _killed_mid_write(path)   # its save removed the first one's temporary, then died too
    second = _tmp_files(tmp_path)
    assert len(second) == 1 and second != first and not path.exists()
    save({"v": 1}, path)
    assert _tmp_files(tmp_path) == [] and load(path) == {"v": 1}


def test_temporaries_of_live_writers_are_kept_until_stale(tmp_path):
    path = tmp_path / "ckpt"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        host = serialization._HOST
        mine = tmp_path / f".ckpt.{live.pid}@{host}.0123abcd.tmp"          # being written
        elsewhere = tmp_path / f".ckpt.{live.pid}@other-host.0123abcd.tmp"  # pid means nothing here
        other_file = tmp_path / f".other.{live.pid + 10**7}@{host}.0123abcd.tmp"
        for f in (mine, elsewhere, other_file):
            f.write_bytes(b"partial")
        save({"v": 1}, path)
        assert sorted(_tmp_files(tmp_path)) == sorted(f.name for f in (mine, elsewhere, other_file))
        old = time.time() - serialization.STALE_SECONDS - 60
        os.utime(elsewhere, (old, old))
        save({"v": 2}, path)
        assert sorted(_tmp_files(tmp_path)) == sorted(f.name for f in (mine, other_file))
    finally:
        live.kill()
        live.wait()
    save({"v": 3}, path)   # its writer is dead now
    assert _tmp_files(tmp_path) == [other_file.name]


# ---------------------------------------------------------------------------- malformed files
def _with_metadata(data: bytes, change) -> bytes:
    """``data`` with ``change`` applied to its safetensors header (a dict), lengths fixed."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def _with_structure(data: bytes, structure_text: str, checksums: bool = False) -> bytes:
    """A checkpoint whose structure is ``structure_text`` (without checksums unless asked: as
    written before they existed, so the structure itself is what is checked)."""
    def change(header):
        meta = header["__metadata__"]
        meta[serialization._STRUCTURE_KEY] = structure_text
        if checksums:
            sums = json.loads(meta[serialization._CHECKSUMS_KEY])
            sums["structure"] = serialization._sha256(structure_text.encode())
            meta[serialization._CHECKSUMS_KEY] = json.dumps(sums)
        else:
            del meta[serialization._CHECKSUMS_KEY]
    return _with_metadata(data, change)


def _simple() -> bytes:
    return serialization.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 1})


MALFORMED_STRUCTURE = {
    "tuple of a number": '{"$tuple": 5}',
    "tuple of a dict": '{"$tuple": {"a": 1}}',
    "dict of a string": '{"$dict": "xy"}',
    "dict of triples": '{"$dict": [[1, 2, 3]]}',
    "unhashable key": '{"$dict": [[{"a": 1}, 2]]}',
    "key of a list inside a tuple": '{"$dict": [[{"$tuple": [[1]]}, 2]]}',
    "tensor named by a number": '{"$tensor": 3}',
    "tensor named by a list": '{"$tensor": ["w"]}',
    "missing tensor": '{"$tensor": "nope"}',
    "bad float": '{"$float": "many"}',
    "float of a number": '{"$float": 1.5}',
    "unknown tag": '{"$set": [1]}',
    "tag beside keys": '{"$tuple": [1], "a": 2}',
    "not JSON": '{"a": ',
    "nested 5000 deep": "[" * 5000 + "]" * 5000,
    "tuples nested 5000 deep": '{"$tuple": [' * 5000 + "]}" * 5000,
}


@pytest.mark.parametrize("case", list(MALFORMED_STRUCTURE))
def test_malformed_structure_raises_checkpoint_error(tmp_path, case):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_with_structure(_simple(), MALFORMED_STRUCTURE[case]))
    with pytest.raises(CheckpointError, match=f"{path}: damaged checkpoint"):
        load(path)


def test_deep_but_readable_structure_loads():
    deep = {"$tuple": [1]}
    for _ in range(400):   # as deep as the JSON reader goes comfortably; decoding is iterative
        deep = {"$tuple": [deep]}
    value = fg.loads(_with_structure(_simple(), json.dumps(deep), checksums=True))
    for _ in range(401):
        assert isinstance(value, tuple)
        value = value[0]
    assert value == 1


MALFORMED_METADATA = {
    "version as a number": lambda h: h["__metadata__"].__setitem__("fusegrad.version", 1),
    "structure as a dict": lambda h: h["__metadata__"].__setitem__("fusegrad.structure", {"a": 1}),
    "no structure": lambda h: h["__metadata__"].pop("fusegrad.structure"),
    "version in other digits": lambda h: h["__metadata__"].__setitem__("fusegrad.version", "١"),
    "checksums not JSON": lambda h: h["__metadata__"].__setitem__("fusegrad.checksums", "{"),
    "checksums of another shape": lambda h: h["__metadata__"].__setitem__(
        "fusegrad.checksums", '{"structure": 1, "tensors": []}'),
    "tensor entry not a dict": lambda h: h.__setitem__("w", [1, 2]),
    "float16 tensor": lambda h: h["w"].__setitem__("dtype", "F16"),
    "uint8 tensor": lambda h: h["w"].update(dtype="U8", shape=[24]),
    "negative shape": lambda h: h["w"].__setitem__("shape", [-2, -3]),
    "huge shape": lambda h: h["w"].__setitem__("shape", [2**62, 2**62]),
    "offsets reversed": lambda h: h["w"].__setitem__("data_offsets", [24, 0]),
    "offsets past the end": lambda h: h["w"].__setitem__("data_offsets", [0, 10**12]),
    "header a list": lambda h: (h.clear(), h.__setitem__("__metadata__", [])),
}


@pytest.mark.parametrize("case", list(MALFORMED_METADATA))
def test_malformed_metadata_raises_checkpoint_error(tmp_path, case):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_with_metadata(_simple(), MALFORMED_METADATA[case]))
    with pytest.raises(CheckpointError, match=str(path)):
        load(path)


def test_unsupported_dtypes_are_refused_not_converted(tmp_path):
    path = tmp_path / "half.ckpt"
    data = _with_metadata(_simple(), lambda h: h["w"].update(dtype="F16", shape=[2, 6]))
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="tensor 'w' has dtype 'F16'.*only F32"):
        load(path)


# ---------------------------------------------------------------------------- checksums
def test_each_tensor_and_the_structure_have_a_checksum():
    data = _simple()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    sums = json.loads(meta["fusegrad.checksums"])
    assert set(sums["tensors"]) == {"w"} and len(sums["structure"]) == 64
    assert safetensors.numpy.load(data)["w"].shape == (2, 3)   # still plain safetensors


@pytest.mark.parametrize("where", ["data", "shape"])
def test_a_changed_tensor_is_detected_by_its_checksum(tmp_path, where):
    data = _simple()
    if where == "data":
        changed = bytearray(data)
        changed[-5] ^= 0x01
        changed = bytes(changed)
    else:   # same bytes, another shape
        changed = _with_metadata(data, lambda h: h["w"].__setitem__("shape", [3, 2]))
    path = tmp_path / "flipped.ckpt"
    path.write_bytes(changed)
    with pytest.raises(CheckpointError, match="tensor 'w' does not match its checksum"):
        load(path)


def test_a_changed_structure_is_detected_by_its_checksum():
    data = _with_metadata(_simple(), lambda h: h["__metadata__"].__setitem__(
        "fusegrad.structure", h["__metadata__"]["fusegrad.structure"].replace('"n":1', '"n":7')))
    with pytest.raises(CheckpointError, match="structure does not match its checksum"):
        fg.loads(data)


def test_checkpoints_written_before_checksums_load_unverified():
    old = _with_metadata(_simple(), lambda h: h["__metadata__"].pop("fusegrad.checksums"))
    value = fg.loads(old)
    assert value["n"] == 1
    np.testing.assert_array_equal(value["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_dumps_and_loads_are_exported():
    obj = {"w": fg.tensor([1.0, 2.0]), "t": (1, "a")}
    back = fg.loads(fg.dumps(obj))
    assert back["t"] == (1, "a") and back["w"].tolist() == [1.0, 2.0]
    assert fg.dumps is serialization.dumps and fg.loads is serialization.loads


# ---------------------------------------------------------------------------- fuzzing
def _fuzz_source() -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = {"f": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
              "d": np.array([1.5, -2.0]), "i": np.arange(4, dtype=np.int32),
              "l": np.array(7, dtype=np.int64), "b": np.array([True, False, True])}
    obj = {"arrays": {k: fg.from_numpy(v.copy()) for k, v in arrays.items()},
           "meta": {"step": 3, "pair": (1.0, None), 4: ["x", {"$": 1}]}, "nan": float("nan")}
    return serialization.dumps(obj), arrays


_FUZZ_DATA, _FUZZ_ARRAYS = _fuzz_source()


def _mutations():
    n = len(_FUZZ_DATA)
    (header_len,) = struct.unpack("<Q", _FUZZ_DATA[:8])
    flip = st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(1, 255))
    flip_header = st.tuples(st.just("flip"), st.integers(0, 8 + header_len - 1),
                            st.integers(1, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, n - 1), st.just(0))
    insert = st.tuples(st.just("insert"), st.integers(0, 8 + header_len), st.integers(0, 255))
    char = st.tuples(st.just("char"), st.integers(8, 8 + header_len - 1),
                     st.sampled_from(b'{}[]",:0123456789-.eE$ \\tnul'))
    return st.lists(st.one_of(flip, flip_header, cut, insert, char), min_size=1, max_size=4)


def _apply(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, at, value in mutations:
        at = min(at, max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value])
        elif kind == "char" and out:
            out[at] = value
    return bytes(out)


def _tensors_of(obj) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in obj["arrays"].items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=_mutations())
def test_mutated_checkpoints_load_identically_or_raise_checkpoint_error(mutations):
    data = _apply(_FUZZ_DATA, mutations)
    try:
        value = fg.loads(data)
    except CheckpointError:
        return
    got = _tensors_of(value)
    assert got.keys() == _FUZZ_ARRAYS.keys()
    for k, v in _FUZZ_ARRAYS.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_a_damaged_checksums_key_does_not_load_the_checkpoint_unverified():
    # found by the fuzzer above: the checksums' key name damaged, then the structure damaged,
    # loaded as a checkpoint from before checksums existed (safetensors orders the metadata
    # keys differently in each process, so the byte offsets of that case do not repeat)
    data = bytearray(_FUZZ_DATA)
    key = data.index(b'"fusegrad.checksums"')
    data[key + 2] ^= 1
    structure = data.index(b'arrays', data.index(b'"fusegrad.structure"'))
    data[structure] ^= 1
    with pytest.raises(CheckpointError, match="metadata 'ftsegrad.checksums' is not one"):
        fg.loads(bytes(data))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.sampled_from(["f", "d", "i", "$tensor", "$tuple", "$dict", "$float", "nan", "inf"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["$tensor", "$ndarray", "$tuple", "$dict", "$float", "$x",
                                       "a", "b"]), children, max_size=2),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(structure=_json)
def test_any_json_structure_loads_or_raises_checkpoint_error(structure):
    data = _with_structure(_FUZZ_DATA, json.dumps(structure))
    try:
        fg.loads(data)
    except CheckpointError:
        pass
