"""The signature of a ``fusegrad.compile`` call and the replay lines that check it.

A signature is what a trace depends on beyond the tensors' values: the structure and plain
values of the arguments, each tensor argument's shape, dtype and autograd standing, and the
grad mode. Calls with equal signatures share a compiled entry; its replay re-checks the parts a
call could change (``signature_guards``) and the memory the arguments share (``alias_guards``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .grad_mode import is_grad_enabled
from .tensor import Tensor


def hashable(value: Any) -> Any:
    """A plain argument as part of a signature: its type and value, so that ``2``, ``2.0`` and
    ``True`` (equal in Python, different dtypes in a trace) differ; floats by their bits, so
    that ``-0.0`` differs from ``0.0`` and a NaN matches itself."""
    if isinstance(value, np.ndarray):
        raise TypeError("fusegrad.compile: pass arrays as fusegrad tensors (fusegrad.tensor(a)); a "
                        "numpy array argument would be frozen into the compiled program")
    if isinstance(value, (float, np.floating)):
        return (type(value).__name__, float(value).hex())
    try:
        hash(value)
        return (type(value).__name__, value)
    except TypeError:
        return ("unhashable", type(value).__name__, repr(value))


def signature(spec: Any, tensors: list[Tensor]) -> tuple:
    """Structure and plain values of the arguments, and shape/dtype/requires_grad of tensors."""
    def strip(s: Any) -> Any:
        kind, body = s
        if kind == "T":
            return "T"
        if kind == "dict":
            return ("dict", tuple((k, strip(v)) for k, v in body))
        if kind in ("tuple", "list"):
            return (kind, tuple(strip(v) for v in body))
        return ("V", hashable(body))
    return (strip(spec), tuple((t.node.shape, t.node.dtype, t.requires_grad and (
        "leaf" if t._is_leaf else "non-leaf")) for t in tensors), is_grad_enabled())


def positional_spec(n: int) -> tuple:
    """The signature's argument structure for a call with ``n`` tensors, all positional."""
    return ("tuple", (("tuple", ("T",) * n), ("dict", ())))


def describe_change(old: tuple, new: tuple) -> str:
    """The first difference between two signatures, in words."""
    for i, (a, b) in enumerate(zip(old[1], new[1])):
        if a != b:
            return (f"tensor argument {i}: shape {list(a[0])} {a[1]} -> shape {list(b[0])} "
                    f"{b[1]}")
    if old[0] != new[0]:
        return f"non-tensor arguments: {old[0]!r} -> {new[0]!r}"
    if old[2] != new[2]:
        return f"grad mode {'on' if old[2] else 'off'} -> {'on' if new[2] else 'off'}"
    if len(old[1]) != len(new[1]):
        return f"number of tensor arguments {len(old[1])} -> {len(new[1])}"
    return "module training modes or gradient state"



def aliases(flat: list[Tensor]) -> list[tuple[int, int]]:
    """Pairs (first, later) of arguments viewing the same memory: the program read them as one
    input, so a replay needs them to share memory again."""
    first: dict[int, int] = {}
    pairs = []
    for i, t in enumerate(flat):
        root = id(t.node.attrs[0].root())
        if root in first:
            pairs.append((first[root], i))
        else:
            first[root] = i
    return pairs


def signature_guards(entry: Any, name: Callable[[str, Any], str]) -> list[str]:
    """The lines checking the signature (the tensors' shapes, dtypes and requires_grad, grad
    mode) and the modules' training modes and ``_replay_flags``."""
    tensors = entry.signature[1]
    head = [f"if len(args) != {len(tensors)}: return MISS"]
    for i, (shape, dtype, grad) in enumerate(tensors):
        head += [f"t = args[{i}]",
                 f"if not isinstance(t, Tensor) or t.node.shape != {shape!r} or t.node.dtype != "
                 f"{dtype!r} or t.requires_grad is not {bool(grad)!r}: return MISS"]
        if grad:
            head.append(f"if t._is_leaf is not {grad == 'leaf'!r}: return MISS")
    head.append(f"if _grad_enabled() is not {entry.signature[2]!r}: return MISS")
    if entry.modules:  # read again only after some module's mode was set
        seen = name("modes_seen", [-1])
        head.append(f"if _MODES_SET[0] != {seen}[0]:")
        for ref, (training, *values) in zip(entry.modules, entry.modes):
            head += [f"    m = {name('module', ref)}()  # {type(ref()).__name__}",
                     f"    if m is not None and m.training is not {training!r}: return MISS"]
            for flag, value in zip(getattr(ref(), "_replay_flags", ()), values):
                head.append(f"    if m is not None and m.{flag} is not {value!r}: return MISS")
        head.append(f"    {seen}[0] = _MODES_SET[0]")
    return head


def alias_guards(aliases: list[tuple[int, int]], updated: list[int], count: int,
                  emit: Callable[[str], None]) -> None:
    """Arguments that shared memory when traced must share it now (the program read them as one
    input); when the body updates an argument in place, the others must not share memory with
    it unless they did when traced (the program reads each before any update)."""
    root = "args[{}].node.attrs[0].root()"
    for i, j in aliases:
        emit(f"if {root.format(i)} is not {root.format(j)}: return MISS")
    group = {later: first for first, later in aliases}
    for i in sorted(set(updated)):
        for j in range(count):
            if j != i and group.get(i, i) != group.get(j, j):
                emit(f"if {root.format(i)} is {root.format(j)}: return MISS")
