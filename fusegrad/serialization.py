"""Checkpoints: ``save``/``load`` of state dicts in the safetensors format, without pickle.

A checkpoint is one safetensors file. Its tensors are the tensors of the saved object (each
stored once, however often it appears); the object's structure — nested dicts, lists and
tuples with plain values, and references to those tensors — is JSON in the header's
``__metadata__`` under ``fusegrad.structure``, so any safetensors reader can open the file.

Saving to a path is atomic: the bytes go to a temporary file in the same folder, are flushed
and fsynced, and the file is renamed over the target (then the folder is fsynced), so a crash
leaves either the old checkpoint or the new one, never a mix. A writer killed mid-write leaves its
temporary (``.<name>.<pid>@<host>.<random>.tmp``) behind; the next save to that path deletes the
temporaries of writers that are dead (same host, no such process) or silent for a day.

Integrity: ``fusegrad.checksums`` in the metadata holds the sha256 of the structure text and of
each tensor (its dtype, shape and bytes), so a changed byte anywhere is a ``CheckpointError``
naming what changed, and the file stays a plain safetensors file. Checkpoints written before
checksums existed (no such key) load unverified. Only the dtypes fusegrad has are read
(float32, float64, int32, int64, bool): a safetensors file with others is refused, not converted.
Whatever is wrong with a file — truncation, a damaged header, metadata of the wrong types,
structure entries of the wrong shape, any nesting depth — ``load`` raises ``CheckpointError``
with the file's name and what was wrong.

JSON encoding of the structure: ``None``, bools, ints, finite floats, strings and lists are
themselves; dicts whose keys are strings not starting with ``$`` are JSON objects; everything
else is a one-key object: ``{"$tensor": name}``, ``{"$ndarray": name}``, ``{"$tuple": [...]}``,
``{"$dict": [[key, value], ...]}`` (other keys, e.g. the ints of an optimizer's state),
``{"$float": "nan" | "inf" | "-inf"}``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, NoReturn

import numpy as np
import safetensors.numpy as safetensors_numpy
from safetensors import SafetensorError

from .errors import CheckpointError
from .tracer.device import CPU, check_device, device
from .tracer.realize import realize
from .tracer.tensor import Tensor

FORMAT = "fusegrad.checkpoint"
VERSION = 1
_FORMAT_KEY = "fusegrad.format"
_VERSION_KEY = "fusegrad.version"
_STRUCTURE_KEY = "fusegrad.structure"
_CHECKSUMS_KEY = "fusegrad.checksums"
_METADATA_KEYS = frozenset({_FORMAT_KEY, _VERSION_KEY, _STRUCTURE_KEY, _CHECKSUMS_KEY})
_DTYPES = {"float32", "float64", "int32", "int64", "bool"}
_SAFETENSORS_DTYPES = {"F32": "float32", "F64": "float64", "I32": "int32", "I64": "int64",
                       "BOOL": "bool"}
STALE_SECONDS = 24 * 3600   # a temporary untouched this long is a dead writer's, whatever its pid

PathLike = str | os.PathLike


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
        map_location: the device the tensors are loaded on (``'cpu'``, ``'cuda'``, a
            ``fusegrad.device``); None: the CPU. A checkpoint holds host copies and records no
            device, so torch's dict and callable forms (which map saved devices) are refused.
        weights_only: accepted for torch compatibility (nothing but data is ever loaded).

    Raises:
        CheckpointError: the file is not a fusegrad checkpoint, or is truncated or damaged.
    """
    if hasattr(f, "read"):
        return loads(f.read(), getattr(f, "name", "<file object>"), map_location)
    path = os.fspath(f)
    with open(path, "rb") as fh:
        return loads(fh.read(), path, map_location)


def dumps(obj: Any) -> bytes:
    """The checkpoint bytes of ``obj`` (what ``save`` writes)."""
    encoder = _Encoder()
    structure = encoder.encode(obj)
    pending = [t for t in encoder.tensors.values() if isinstance(t, Tensor)]
    realize(*pending)  # every pending tensor of the checkpoint in one program
    arrays = {name: _array_of(value) for name, value in encoder.tensors.items()}
    structure_text = json.dumps(structure, allow_nan=False, separators=(",", ":"))
    checksums = {"structure": _sha256(structure_text.encode()),
                 "tensors": {name: _tensor_sha256(arr) for name, arr in arrays.items()}}
    metadata = {_FORMAT_KEY: FORMAT, _VERSION_KEY: str(VERSION), _STRUCTURE_KEY: structure_text,
                _CHECKSUMS_KEY: json.dumps(checksums, separators=(",", ":"))}
    return safetensors_numpy.save(arrays, metadata=metadata)


def loads(data: bytes, source: str = "<bytes>", map_location: Any = None) -> Any:
    """The object in checkpoint bytes ``data`` (what ``load`` reads from a file).

    Args:
        data: the bytes ``dumps`` or ``save`` wrote.
        source: names the bytes in errors (``load`` passes the file name).
        map_location: the device tensors are loaded on (see ``load``).

    Raises:
        CheckpointError: the bytes are not a fusegrad checkpoint, or are truncated or damaged.
    """
    if isinstance(map_location, dict) or callable(map_location):
        raise TypeError("fusegrad.load: map_location must name one device ('cpu', 'cuda' or a "
                        "fusegrad.device): checkpoints hold host copies and record no device")
    target = check_device(map_location)
    metadata = _read_metadata(data, source)
    try:
        arrays = safetensors_numpy.load(bytes(data))
    except SafetensorError as e:
        raise CheckpointError(f"{source}: truncated or damaged checkpoint ({e})") from None
    structure_text = metadata.get(_STRUCTURE_KEY)
    if structure_text is None:
        raise CheckpointError(f"{source}: damaged checkpoint (no {_STRUCTURE_KEY} in its metadata)")
    checksums = _checksums(metadata, source)
    if checksums is not None:
        _verify(checksums, structure_text, arrays, source)
    try:
        structure = json.loads(structure_text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{source}: damaged checkpoint structure ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{source}: damaged checkpoint structure (nested too deeply to "
                              "read)") from None
    return _Decoder(arrays, source, target).decode(structure)


# ---------------------------------------------------------------------------- writing
def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    _remove_stale_temporaries(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}@{_HOST}.{secrets.token_hex(4)}.tmp")
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


_HOST = socket.gethostname().replace(".", "-").replace(os.sep, "-") or "host"


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Delete the temporaries of earlier saves to ``name`` whose writers are gone: killed (their
    pid no longer runs on this host) or silent for ``STALE_SECONDS``. Best effort."""
    prefix = f".{name}."
    try:
        candidates = [e for e in os.scandir(directory)
                      if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    now = time.time()
    for entry in candidates:
        writer = entry.name[len(prefix):-len(".tmp")].rsplit(".", 1)[0]   # "<pid>@<host>"
        pid, _, host = writer.partition("@")
        try:
            if host == _HOST and pid.isdigit() and not _alive(int(pid)) or \
                    now - entry.stat().st_mtime > STALE_SECONDS:
                os.unlink(entry.path)
        except OSError:  # gone already (its writer finished), or not ours to delete
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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


def _sha256(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_sha256(arr: np.ndarray) -> str:
    """sha256 of a tensor's dtype, shape and bytes (a changed shape is caught as well)."""
    h = hashlib.sha256(f"{arr.dtype.name}{list(arr.shape)}".encode())
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return h.hexdigest()


# ---------------------------------------------------------------------------- reading
def _read_metadata(data: bytes, source: str) -> dict[str, str]:
    """The header's ``__metadata__``, after checking the file is a fusegrad checkpoint whose
    tensors have dtypes fusegrad has."""
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: not a fusegrad checkpoint (no safetensors JSON "
                              "header)")
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get(_FORMAT_KEY) != FORMAT:
        raise CheckpointError(f"{source}: not a fusegrad checkpoint: a safetensors file that "
                              "fusegrad.save did not write (no fusegrad structure in its "
                              "metadata); read its tensors with safetensors.numpy.load_file")
    wrong = next((k for k, v in metadata.items() if not isinstance(v, str)), None)
    if wrong is not None:
        raise CheckpointError(f"{source}: damaged checkpoint: metadata {wrong!r} is a "
                              f"{type(metadata[wrong]).__name__}, not a string")
    unknown = sorted(set(metadata) - _METADATA_KEYS)
    if unknown:  # a damaged key name would otherwise drop what it names (the checksums)
        raise CheckpointError(f"{source}: damaged checkpoint: metadata {unknown[0]!r} is not one "
                              "fusegrad.save writes")
    version = metadata.get(_VERSION_KEY, "")
    if not (version.isascii() and version.isdigit()) or int(version) > VERSION:
        raise CheckpointError(f"{source}: checkpoint format version {version!r} is newer than "
                              f"this fusegrad reads ({VERSION})")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{source}: tensor {name!r} has dtype {dtype!r}, which fusegrad checkpoints do "
                f"not hold (only {', '.join(_SAFETENSORS_DTYPES)})")
    return metadata


def _checksums(metadata: dict[str, str], source: str) -> dict | None:
    """The checksums in the metadata; None in a checkpoint written before they existed."""
    text = metadata.get(_CHECKSUMS_KEY)
    if text is None:
        return None
    try:
        checksums = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        checksums = None
    ok = (isinstance(checksums, dict) and isinstance(checksums.get("structure"), str)
          and isinstance(checksums.get("tensors"), dict)
          and all(isinstance(v, str) for v in checksums["tensors"].values()))
    if not ok:
        raise CheckpointError(f"{source}: damaged checkpoint ({_CHECKSUMS_KEY} is not a table of "
                              "checksums)")
    return checksums


def _verify(checksums: dict, structure_text: str, arrays: dict[str, np.ndarray],
            source: str) -> None:
    if _sha256(structure_text.encode()) != checksums["structure"]:
        raise CheckpointError(f"{source}: damaged checkpoint (the structure does not match its "
                              "checksum)")
    expected = checksums["tensors"]
    if set(expected) != set(arrays):
        names = sorted(set(expected) ^ set(arrays))
        raise CheckpointError(f"{source}: damaged checkpoint (tensors {names} are not the "
                              "tensors its checksums name)")
    for name, arr in arrays.items():
        if _tensor_sha256(arr) != expected[name]:
            raise CheckpointError(f"{source}: damaged checkpoint (tensor {name!r} does not match "
                                  "its checksum: its bytes, dtype or shape changed)")


@dataclass
class _Build:
    """Make a container from the last ``count`` decoded values (``_Decoder.decode``'s stack)."""

    make: Callable[[list[Any]], Any]
    count: int


class _Decoder:
    """Turns the JSON structure back into Python objects, checking every entry's shape.

    Iterative (an explicit stack): how deep the structure nests is no concern of the call stack.
    """

    def __init__(self, arrays: dict[str, np.ndarray], source: str, target: device = CPU):
        self.arrays = arrays
        self.source = source
        self.target = target
        self._loaded: dict[tuple[str, bool], Any] = {}

    def decode(self, root: Any) -> Any:
        values: list[Any] = []
        stack: list[Any] = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, _Build):
                args = values[len(values) - item.count:]
                del values[len(values) - item.count:]
                values.append(item.make(args))
                continue
            build, children = self._entry(item)
            if build is None:
                values.append(children)
            else:
                stack.append(_Build(build, len(children)))
                stack.extend(reversed(children))
        return values[0]

    def _entry(self, obj: Any) -> tuple[Callable[[list[Any]], Any] | None, Any]:
        """``(None, value)`` for a plain value, else ``(make, children)``."""
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return None, obj
        if isinstance(obj, list):
            return list, obj
        if not isinstance(obj, dict):
            self._fail(f"a {type(obj).__name__}")
        tags = [k for k in obj if k.startswith("$")]
        if not tags:
            keys = list(obj)
            return (lambda vals: dict(zip(keys, vals))), list(obj.values())
        if len(obj) != 1:
            self._fail(f"entry {tags[0]!r} beside other keys")
        (tag, value), = obj.items()
        if tag in ("$tensor", "$ndarray"):
            if not isinstance(value, str):
                self._fail(f"{tag} names a {type(value).__name__}, not a tensor")
            return None, self._array(value, as_tensor=tag == "$tensor")
        if tag == "$float":
            if value not in ("nan", "inf", "-inf"):
                self._fail(f"$float holds {value!r}")
            return None, float(value)
        if tag == "$tuple":
            if not isinstance(value, list):
                self._fail(f"$tuple holds a {type(value).__name__}, not a list")
            return tuple, value
        if tag == "$dict":
            if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2
                                                      for p in value):
                self._fail("$dict does not hold [key, value] pairs")
            return self._dict, [x for pair in value for x in pair]
        self._fail(f"unknown entry {tag!r}")

    def _dict(self, flat: list[Any]) -> dict:
        out = {}
        for key, value in zip(flat[::2], flat[1::2]):
            try:
                out[key] = value
            except TypeError:
                self._fail(f"a dict key of type {type(key).__name__}")
        return out

    def _fail(self, what: str) -> NoReturn:
        raise CheckpointError(f"{self.source}: damaged checkpoint structure ({what})")

    def _array(self, name: str, as_tensor: bool) -> Any:
        key = (name, as_tensor)
        if key not in self._loaded:
            if name not in self.arrays:
                raise CheckpointError(f"{self.source}: damaged checkpoint (tensor {name!r} is "
                                      "missing)")
            arr = np.array(self.arrays[name], copy=True)
            self._loaded[key] = Tensor(arr, device=self.target) if as_tensor else arr
        return self._loaded[key]
