"""Nested arguments and results of compiled functions: tensors in tuples, lists and dicts."""
from __future__ import annotations

from typing import Any

from .tensor import Tensor


def flatten(obj: Any, leaves: list[Any]) -> Any:
    """Replace tensors in nested tuples/lists/dicts by their index in ``leaves``; returns the
    structure (a spec that ``unflatten`` fills back in)."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return ("T", len(leaves) - 1)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(flatten(o, leaves) for o in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, flatten(v, leaves)) for k, v in obj.items()))
    return ("V", obj)


def unflatten(spec: Any, leaves: list[Any]) -> Any:
    """The structure ``spec`` with its tensors taken from ``leaves``."""
    kind, body = spec
    if kind == "T":
        return leaves[body]
    if kind in ("tuple", "list"):
        items = [unflatten(s, leaves) for s in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: unflatten(s, leaves) for k, s in body}
    return body
