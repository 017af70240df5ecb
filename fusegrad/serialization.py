"""Checkpoints: ``save``/``load`` of state dicts in the safetensors format, without pickle.

A checkpoint is one safetensors file. Its tensors are the tensors of the saved object (each
stored once, however often it appears); the object's structure — nested dicts, lists and
tuples with plain values, and references to those tensors — is JSON in the header's
``__metadata__`` under ``fusegrad.structure``, so any safetensors reader can open the file.

Saving to a path is atomic: the bytes go to a temporary file in the same folder, are flushed
and fsynced, and the file is renamed over the target (then the folder is fsynced), so a crash
leaves either the old checkpoint or the new one, never a mix.

JSON encoding of the structure: ``None``, bools, ints, finite floats, strings and lists are
themselves; dicts whose keys are strings not starting with ``$`` are JSON objects; everything
else is a one-key object: ``{"$tensor": name}``, ``{"$ndarray": name}``, ``{"$tuple": [...]}``,
``{"$dict": [[key, value], ...]}`` (other keys, e.g. the ints of an optimizer's state),
``{"$float": "nan" | "inf" | "-inf"}``.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
import safetensors.numpy as safetensors_numpy
from safetensors import SafetensorError

from .ir.errors import FusegradError
from .tracer.realize import realize
from .tracer.tensor import Tensor

FORMAT = "fusegrad.checkpoint"
VERSION = 1
_FORMAT_KEY = "fusegrad.format"
_VERSION_KEY = "fusegrad.version"
_STRUCTURE_KEY = "fusegrad.structure"
_DTYPES = {"float32", "float64", "int32", "int64", "bool"}

PathLike = str | os.PathLike


class CheckpointError(FusegradError, ValueError):
    """A file that is not a fusegrad checkpoint, or is truncated or damaged."""


def save(obj: Any, f: PathLike | IO[bytes]) -> None:
    """Write ``obj`` — a state dict, or nested dicts/lists/tuples of them and plain values.

    Args:
        obj: tensors, numpy arrays, ``None``, bools, ints, floats, strings, and dicts, lists
            and tuples of these (a model's and an optimizer's ``state_dict()``, epochs...).
        f: a path (written atomically) or a binary file object (written at its position).

    Raises:
        TypeError: ``obj`` holds something else (the message names where).
    """
    data = dumps(obj)
    if hasattr(f, "write"):
        f.write(data)
        return
    _write_atomic(os.fspath(f), data)


def load(f: PathLike | IO[bytes], map_location: Any = None, weights_only: bool = True) -> Any:
    """Read what ``save`` wrote; tensors come back as fusegrad Tensors.

    Args:
        f: a path or a binary file object.
        map_location: accepted for torch compatibility (tensors load on the CPU).
        weights_only: accepted for torch compatibility (nothing but data is ever loaded).

    Raises:
        CheckpointError: the file is not a fusegrad checkpoint, or is truncated or damaged.
    """
    if hasattr(f, "read"):
        return loads(f.read(), getattr(f, "name", "<file object>"))
    path = os.fspath(f)
    with open(path, "rb") as fh:
        return loads(fh.read(), path)


def dumps(obj: Any) -> bytes:
    """The checkpoint bytes of ``obj`` (what ``save`` writes)."""
    encoder = _Encoder()
    structure = encoder.encode(obj)
    pending = [t for t in encoder.tensors.values() if isinstance(t, Tensor)]
    realize(*pending)  # every pending tensor of the checkpoint in one program
    arrays = {name: _array_of(value) for name, value in encoder.tensors.items()}
    metadata = {_FORMAT_KEY: FORMAT, _VERSION_KEY: str(VERSION),
                _STRUCTURE_KEY: json.dumps(structure, allow_nan=False, separators=(",", ":"))}
    return safetensors_numpy.save(arrays, metadata=metadata)


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """The object in checkpoint bytes ``data``; ``source`` names them in errors."""
    metadata = _read_metadata(data, source)
    try:
        arrays = safetensors_numpy.load(bytes(data))
    except SafetensorError as e:
        raise CheckpointError(f"{source}: truncated or damaged checkpoint ({e})") from None
    try:
        structure = json.loads(metadata[_STRUCTURE_KEY])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{source}: damaged checkpoint structure ({e})") from None
    return _Decoder(arrays, source).decode(structure)


# ---------------------------------------------------------------------------- writing
def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask set the mode, as for a file opened with open(path, "wb")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (where directories can be opened: not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Tensor | np.ndarray] = {}
        self._names: dict[int, str] = {}

    def _store(self, value: Tensor | np.ndarray, path: tuple) -> str:
        """The tensor's name in the file: its path (``model.0.weight``), stored once."""
        name = self._names.get(id(value))
        if name is None:
            base = ".".join(str(k) for k in path) or "tensor"
            name, n = base, 1
            while name in self.tensors:
                n += 1
                name = f"{base}#{n}"
            self._names[id(value)] = name
            self.tensors[name] = value
        return name

    def encode(self, obj: Any, path: tuple = ()) -> Any:
        where = "checkpoint" + "".join(f"[{k!r}]" for k in path)
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.generic):
            obj = obj.item()
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            return {"$float": "nan" if math.isnan(obj) else "inf" if obj > 0 else "-inf"}
        if isinstance(obj, Tensor):
            self._check_dtype(obj.node.dtype, where)
            return {"$tensor": self._store(obj, path)}
        if isinstance(obj, np.ndarray):
            self._check_dtype(obj.dtype.name, where)
            return {"$ndarray": self._store(obj, path)}
        if isinstance(obj, list):
            return [self.encode(v, (*path, i)) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"$tuple": [self.encode(v, (*path, i)) for i, v in enumerate(obj)]}
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in obj):
                return {k: self.encode(v, (*path, k)) for k, v in obj.items()}
            return {"$dict": [[self._key(k, where), self.encode(v, (*path, k))]
                              for k, v in obj.items()]}
        raise TypeError(f"fusegrad.save: cannot save {type(obj).__name__} at {where}: "
                        "checkpoints hold tensors, numpy arrays, None, bool, int, float, str, "
                        "and dicts, lists and tuples of them")

    def _key(self, key: Any, where: str) -> Any:
        if isinstance(key, (Tensor, np.ndarray, list, Mapping)):
            raise TypeError(f"fusegrad.save: cannot save a dict key of type "
                            f"{type(key).__name__} at {where}")
        if isinstance(key, tuple):
            return {"$tuple": [self._key(k, where) for k in key]}
        return self.encode(key)

    @staticmethod
    def _check_dtype(dtype: str, where: str) -> None:
        if dtype not in _DTYPES:
            raise TypeError(f"fusegrad.save: cannot save an array of dtype {dtype} at {where}")


def _array_of(value: Tensor | np.ndarray) -> np.ndarray:
    arr = value.detach()._value() if isinstance(value, Tensor) else value
    return np.ascontiguousarray(arr).reshape(arr.shape)


# ---------------------------------------------------------------------------- reading
def _read_metadata(data: bytes, source: str) -> dict[str, str]:
    """The header's ``__metadata__``, after checking the file is a fusegrad checkpoint."""
    if len(data) == 0:
        raise CheckpointError(f"{source}: empty file, not a fusegrad checkpoint")
    if len(data) < 8:
        raise CheckpointError(f"{source}: not a fusegrad checkpoint (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise CheckpointError(
            f"{source}: not a fusegrad checkpoint, or truncated: the safetensors header claims "
            f"{header_len} bytes but the file has {len(data) - 8} after the length")
    try:
        header = json.loads(bytes(data[8:8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: not a fusegrad checkpoint (no safetensors JSON "
                              "header)")
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get(_FORMAT_KEY) != FORMAT:
        raise CheckpointError(f"{source}: not a fusegrad checkpoint: a safetensors file that "
                              "fusegrad.save did not write (no fusegrad structure in its "
                              "metadata); read its tensors with safetensors.numpy.load_file")
    version = metadata.get(_VERSION_KEY, "")
    if not version.isdigit() or int(version) > VERSION:
        raise CheckpointError(f"{source}: checkpoint format version {version!r} is newer than "
                              f"this fusegrad reads ({VERSION})")
    return metadata


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray], source: str):
        self.arrays = arrays
        self.source = source
        self._loaded: dict[str, Any] = {}

    def decode(self, obj: Any) -> Any:
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if len(obj) == 1:
            (tag, value), = obj.items()
            if tag == "$tensor":
                return self._array(value, as_tensor=True)
            if tag == "$ndarray":
                return self._array(value, as_tensor=False)
            if tag == "$tuple":
                return tuple(self.decode(v) for v in value)
            if tag == "$dict":
                return {_hashable(self.decode(k)): self.decode(v) for k, v in value}
            if tag == "$float":
                return float(value)
        if any(k.startswith("$") for k in obj):
            raise CheckpointError(f"{self.source}: damaged checkpoint structure (unknown entry "
                                  f"{next(k for k in obj if k.startswith('$'))!r})")
        return {k: self.decode(v) for k, v in obj.items()}

    def _array(self, name: str, as_tensor: bool) -> Any:
        key = (name, as_tensor)
        if key not in self._loaded:
            if name not in self.arrays:
                raise CheckpointError(f"{self.source}: damaged checkpoint (tensor {name!r} is "
                                      "missing)")
            arr = np.array(self.arrays[name], copy=True)
            self._loaded[key] = Tensor(arr) if as_tensor else arr
        return self._loaded[key]


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (tuple, list)) else key
