"""The on-disk program cache: what a compiled program needs to run, without its Schedule.

A second process replaying a step it has seen skips the passes, fusion and code generation: the
program's buffer plan, its generated run loop and its kernels' sources are read back from
``<kernel_dir()>/p_<digest>.json`` and its kernels are loaded through the kernel cache
(``cache.load_kernel``: a missing or damaged kernel file is rebuilt from the stored source).

``digest`` is the sha256 of ``repr((backend, structural key, parallel threshold))`` (the
entry's ``key``, checked on load: a file copied over another entry is not that entry): the key's
buffer leaves are slots and its attrs are Python ints, floats (with their ``float.hex``),
bools, strings and tuples of them, whose ``repr`` is the same in every process. The folder names
fusegrad, numba, llvmlite, Python and the CPU; the entry also records a fingerprint of the
compiler's own source (``fusegrad/ir``, ``fusegrad/backends``), so editing the compiler without a
version bump never replays a program compiled by the old code.

An entry is JSON (no pickle), written once and atomically: ``{"checksum": <sha256 of the program
text>, "program": <program>}``. Anything wrong with it (unreadable, truncated, not JSON, a bad
checksum, a missing field, another key, format or compiler, a kernel that will not load) makes it
a miss: it is deleted and the program is compiled again; so is a loaded program whose first run
fails (``tracer/realize.py``). Loading an entry touches it: the size bound evicts least recently
used entries (``eviction.py``). ``FUSEGRAD_CACHE=0`` turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...ir.dtypes import DTYPES, to_numpy
from ...ir.view import View
from . import eviction
from .cache import (STATS, _write_atomic, cache_dir, cache_enabled, cache_key, folder_access,
                    kernel_dir, load_kernel)
from .render import LENGTH_DTYPE, KernelSource, source_hash
from .program import (LazyKernel, NumbaProgram, _CompiledKernel, base_namespace, bind_run,
                      parallel_threshold)
from .program_assigns import assign_lines

FORMAT = 7
# tracer modules that register macro expanders: their source is part of the fingerprint
MACRO_MODULES = ("recurrent", "windows", "nll")
_PREFIX = '{"checksum":"'
_MIDDLE = '","program":'
# what compile_schedule puts in every namespace
_BASE_NAMES = tuple(base_namespace())


# ---------------------------------------------------------------------------- keys
_FINGERPRINT: list[str | None] = []


def compiler_fingerprint() -> str | None:
    """sha256 of the source of everything that turns a graph into a program (computed once);
    None when that source cannot be read (the program cache is then off)."""
    if not _FINGERPRINT:
        root = Path(__file__).resolve().parents[2]   # the fusegrad package
        h = hashlib.sha256()
        try:
            paths = [p for folder in ("ir", "backends") for p in sorted((root / folder).rglob("*.py"))]
            # the tracer's macro expanders run after a graph is keyed (ir/macro.py)
            paths += [root / "tracer" / f"{name}.py" for name in MACRO_MODULES]
            for path in paths:
                h.update(path.relative_to(root).as_posix().encode() + b"\0")
                h.update(path.read_bytes() + b"\0")
            _FINGERPRINT.append(h.hexdigest() if paths else None)
        except OSError:
            _FINGERPRINT.append(None)
    return _FINGERPRINT[0]


def enabled() -> bool:
    """Whether programs are read from and written to disk (off with ``FUSEGRAD_CACHE=0``)."""
    return cache_enabled() and compiler_fingerprint() is not None


def entry_key(backend: str, key: tuple) -> str | None:
    """The digest naming the program of structural ``key``; None when the key has no stable
    text."""
    try:
        text = repr((backend, key, parallel_threshold()))
    except Exception:  # noqa: BLE001 - an attr whose repr fails: no disk entry for this graph
        return None
    if " at 0x" in text:  # an attr without a value repr: its text changes from run to run
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(digest: str) -> Path:
    """The file of the program whose ``entry_key`` is ``digest``."""
    return kernel_dir() / f"p_{digest[:40]}.json"


# ---------------------------------------------------------------------------- the loaded program
@dataclass
class StoredPlan:
    """The buffer plan of a program read from disk: blocks and where each intermediate lives."""

    blocks: list[tuple[str, int]] = field(default_factory=list)
    temps: list[tuple[int, int, int]] = field(default_factory=list)  # (block, elements, offset)
    no_reuse_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(to_numpy(dt).itemsize * n for dt, n in self.blocks)


class StoredProgram:
    """A program read from the disk cache: runs like the ``NumbaProgram`` it was saved from.

    It has no Schedule (``schedule`` is None); ``sources`` are the stored kernel modules and
    ``facts`` the counts and compile times of the original compilation.
    """

    schedule = None

    def __init__(self, kernels: list[_CompiledKernel], plan: StoredPlan, run_source: str,
                 namespace: dict, prebound: list[tuple[str, str]], facts: dict,
                 assigns: list[str]):
        self.kernels = kernels
        self.assigns = assigns   # the original program's description of its assigns
        self.plan = plan
        self.run_source = run_source
        self.prebound = prebound
        self.facts = facts
        self._namespace = namespace

    @property
    def sources(self) -> list[KernelSource]:
        return [k.source for k in self.kernels]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Same contract as ``NumbaProgram.run``."""
        self.run = bind_run(self._namespace, self.plan.blocks, self.plan.temps, self.prebound,
                            self.run_source)
        return self.run(inputs)

    def describe(self) -> str:
        f = self.facts
        lines = [(f"NumbaProgram (loaded from the disk cache): {f['items']} items "
                  f"({f['kernel_count']} kernels, {f['extern_count']} externs), {f['inputs']} "
                  f"inputs, {f['outputs']} outputs")]
        for k in self.kernels:
            mode = "parallel" if k.source.parallel else "serial"
            lines.append(f"  kernel {k.source.function:<32} {mode:<8} hash {k.source.hash[:12]}")
        p = self.plan
        lines.append(f"buffer plan: {len(p.temps)} intermediates in {len(p.blocks)} blocks, "
                     f"{p.total_bytes} B (without reuse {p.no_reuse_bytes} B)")
        lines.extend(self.assigns)
        lines.append(self.run_source.rstrip())
        return "\n".join(lines)


# ---------------------------------------------------------------------------- store
def _view_json(view: View) -> dict:
    return {"shape": list(view.shape), "strides": list(view.strides), "offset": view.offset,
            "masks": None if view.masks is None else [None if m is None else list(m)
                                                      for m in view.masks]}


def _kernel_json(k: _CompiledKernel) -> dict:
    return {"name": k.source.name, "source": k.source.source, "function": k.source.function,
            "hash": k.source.hash, "parallel": k.source.parallel, "call": k.call_name,
            "arg_dtypes": list(k.source.arg_dtypes)}


def encode(digest: str, program: NumbaProgram, slots: list[int], seconds: dict[str, float]
           ) -> str | None:
    """The entry text of ``program``, the program of ``digest`` (None if it holds something this
    format cannot keep)."""
    schedule, plan = program.schedule, program.plan
    calls = {k.call_name for k in (*program.kernels, *program.lazy_kernels)}
    views = {name: v for name, v in program._namespace.items() if isinstance(v, View)}
    if set(program._namespace) != set(_BASE_NAMES) | calls | set(views):
        return None  # a namespace entry this format does not know how to save
    body = {
        "format": FORMAT,
        "key": digest,
        "toolchain": cache_key(),
        "compiler": compiler_fingerprint(),
        "slots": list(slots),
        "blocks": [[dt, n] for dt, n in plan.blocks],
        "temps": [list(entry) for entry in plan.temps()],
        "prebound": [[name, expr] for name, expr in program.prebound],
        "run_source": program.run_source,
        "assigns": assign_lines(program.assigns, program.names),
        "kernels": [_kernel_json(k) for k in program.kernels],
        "lazy_kernels": [_kernel_json(k) for k in program.lazy_kernels],
        "views": {name: _view_json(v) for name, v in views.items()},
        "facts": {"kernel_count": len(schedule.kernels), "extern_count": len(schedule.externs),
                  "items": len(schedule.items), "inputs": len(program.inputs),
                  "outputs": len(schedule.outputs), "total_bytes": plan.total_bytes,
                  "no_reuse_bytes": plan.no_reuse_bytes,
                  "seconds": {k: float(v) for k, v in seconds.items()}},
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return f"{_PREFIX}{hashlib.sha256(text.encode()).hexdigest()}{_MIDDLE}{text}}}"


def store(digest: str, program: NumbaProgram, slots: list[int], seconds: dict[str, float]) -> bool:
    """Write the entry of ``program`` (whose ``entry_key`` is ``digest``) unless one is there;
    True if written or present.

    Never fails: a folder that cannot be written leaves the program in memory only.
    """
    try:
        text = encode(digest, program, slots, seconds)
        if text is None or folder_access() != "write":
            return False
        _write_atomic(entry_path(digest), text)
        eviction.note_written(cache_dir(), len(text))
        return True
    except Exception:  # noqa: BLE001 - a program that cannot be saved is only kept in memory
        return False


# ---------------------------------------------------------------------------- load
class StaleEntry(Exception):
    """A well-formed entry written by another format or compiler: replaced without a warning."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _ints(value, n: int | None = None) -> list[int]:
    _check(isinstance(value, list) and all(type(v) is int for v in value), "expected ints")
    _check(n is None or len(value) == n, "wrong length")
    return value


def decode(text: str, digest: str | None = None) -> dict:
    """The program of an entry's text, its checksum verified, and if ``digest`` is given, that
    it is the entry of that key (ValueError if anything is off)."""
    head = len(_PREFIX) + 64
    _check(text.startswith(_PREFIX) and text[head:head + len(_MIDDLE)] == _MIDDLE
           and text.endswith("}"), "not a program entry")
    body_text = text[head + len(_MIDDLE):-1]
    _check(hashlib.sha256(body_text.encode()).hexdigest() == text[len(_PREFIX):head],
           "checksum mismatch")
    body = json.loads(body_text)
    _check(isinstance(body, dict), "not an object")
    if body.get("format") != FORMAT or body.get("toolchain") != cache_key() or \
            body.get("compiler") != compiler_fingerprint():
        raise StaleEntry("written by another fusegrad")
    _check(digest is None or body.get("key") == digest, "the entry of another program")
    return body


def rebuild(body: dict, leaf_count: int) -> tuple[StoredProgram, list[int]]:
    """The program of a decoded entry and its input slots; its kernels loaded (or compiled)."""
    slots = _ints(body["slots"])
    _check(len(set(slots)) == len(slots) and all(0 <= s < leaf_count for s in slots), "bad slots")
    facts = body["facts"]
    for name in ("kernel_count", "extern_count", "items", "inputs", "outputs", "total_bytes",
                 "no_reuse_bytes"):
        _check(type(facts[name]) is int and facts[name] >= 0, f"bad {name}")
    _check(facts["inputs"] == len(slots), "inputs do not match slots")
    _check(isinstance(facts["seconds"], dict)
           and all(isinstance(v, float) for v in facts["seconds"].values()), "bad seconds")
    blocks = []
    for entry in body["blocks"]:
        _check(isinstance(entry, list) and len(entry) == 2 and entry[0] in DTYPES
               and type(entry[1]) is int and entry[1] >= 0, "bad block")
        blocks.append((entry[0], entry[1]))
    temps = []
    for entry in body["temps"]:
        block, size, offset = _ints(entry, 3)
        _check(0 <= block < len(blocks) and 0 <= offset and 0 <= size
               and offset + size <= blocks[block][1], "bad intermediate")
        temps.append((block, size, offset))
    prebound = []
    for entry in body["prebound"]:
        _check(isinstance(entry, list) and len(entry) == 2
               and all(isinstance(x, str) for x in entry), "bad prebound view")
        prebound.append((entry[0], entry[1]))
    run_source = body["run_source"]
    _check(isinstance(run_source, str) and run_source.startswith("def run(inputs):\n"),
           "bad run loop")
    compile(run_source, "<fusegrad run>", "exec")  # a SyntaxError is a damaged entry
    assigns = body["assigns"]
    _check(isinstance(assigns, list) and all(isinstance(x, str) for x in assigns), "bad assigns")

    namespace = base_namespace()
    for name, v in body["views"].items():
        masks = v["masks"]
        _check(masks is None or isinstance(masks, list), "bad masks")
        view = View(tuple(_ints(v["shape"])), tuple(_ints(v["strides"], len(v["shape"]))),
                    v["offset"], None if masks is None else
                    tuple(None if m is None else tuple(_ints(m, 3)) for m in masks))
        _check(type(view.offset) is int and name not in namespace, "bad view")
        namespace[name] = view
    kernels = [_kernel_entry(k, namespace, lazy=False) for k in body["kernels"]]
    for k in body["lazy_kernels"]:
        _kernel_entry(k, namespace, lazy=True)
    _check(len(kernels) == facts["kernel_count"], "kernel count mismatch")
    plan = StoredPlan(blocks, temps, facts["no_reuse_bytes"])
    return StoredProgram(kernels, plan, run_source, namespace, prebound, facts, assigns), slots


def _kernel_entry(k: dict, namespace: dict, lazy: bool) -> _CompiledKernel:
    """The kernel of an entry's record, bound in ``namespace`` under its call name: loaded now,
    or on its first call (``lazy``: a copying run's plain writer, ``program.LazyKernel``)."""
    ks = KernelSource(k["name"], k["source"], k["function"], k["hash"], bool(k["parallel"]))
    _check(all(isinstance(x, str) for x in (ks.name, ks.source, ks.function, k["call"]))
           and ks.function.isidentifier() and k["call"].isidentifier()
           and source_hash(ks.source) == ks.hash, "bad kernel")
    dtypes = k["arg_dtypes"]
    _check(isinstance(dtypes, list) and all(d in DTYPES for d in dtypes[:-1])
           and (not dtypes or dtypes[-1] in DTYPES or dtypes[-1] == LENGTH_DTYPE),
           "bad dtypes")
    _check(k["call"] not in namespace, "kernel name taken twice")
    call = k["call"]
    namespace[call] = LazyKernel(ks, tuple(dtypes), namespace, call) if lazy else \
        load_kernel(ks, tuple(dtypes))
    return _CompiledKernel(None, ks, call)


def load(digest: str, leaf_count: int) -> tuple[StoredProgram, list[int]] | None:
    """The program whose ``entry_key`` is ``digest`` and its input slots, or None (a miss).

    A damaged or stale entry is deleted (a damaged one with a warning); never raises.
    """
    path = entry_path(digest)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        _discard(path, exc)
        return None
    try:
        found = rebuild(decode(text, digest), leaf_count)
        eviction.touch(path)
        return found
    except StaleEntry:
        _discard(path, None)
    except Exception as exc:  # noqa: BLE001 - anything wrong with an entry makes it a miss
        _discard(path, exc)
    return None


def discard(digest: str) -> None:
    """Delete the entry of ``digest`` (a loaded program that failed its first run)."""
    _discard(entry_path(digest), None)


def _discard(path: Path, exc: BaseException | None) -> None:
    """Delete a damaged (``exc``: with a warning) or stale entry."""
    if exc is not None:
        STATS.damaged_entries += 1
        warnings.warn(f"fusegrad: program cache entry {path.name} was damaged "
                      f"({type(exc).__name__}: {exc}); compiling the program again",
                      RuntimeWarning, stacklevel=3)
    try:
        os.unlink(path)
    except OSError:  # already gone (another process deleted it) or not ours to delete
        pass

