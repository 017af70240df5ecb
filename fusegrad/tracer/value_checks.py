"""Checks of a tensor's values that an op makes before its result means anything (class indices
in range, probabilities in [0, 1], embedding indices), the same on every backend.

A check never depends on whether the value happens to be computed already:

- a value held in a buffer, or a buffer's value reshaped or widened to int64, is checked on that
  buffer's data, without computing anything;
- outside ``fusegrad.compile``, any other pending value is realized for the check (torch sees
  every value eagerly and raises before the step runs; so does fusegrad);
- inside a ``fusegrad.compile`` trace values cannot be realized: such a value is computed aside
  for the check (a program of its own; the trace is unchanged).

Inside a trace, a check of a value that comes from a call's argument (the argument itself, or
reshaped or widened) runs again on every replay, on that call's argument; a value computed from
other things inside the compiled function is checked when the function is traced.

Layers (``nnlib``) call :func:`check_values` with a ``check(flat_array)`` that raises the torch
error type; :func:`in_range_test` makes the fast one-pass range test of the active backend.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import NamedTuple

import numpy as np

from ..ir.device import to_host
from ..ir.node import Node
from . import capture
from .tensor import Tensor

Check = Callable[[np.ndarray], None]

_SAME_VALUES = ("reshape",)  # ops that keep every element's value, in the same order


def check_values(tensor: Tensor, check: Check, key: Hashable | None = None) -> None:
    """Run ``check(flat_values)`` on ``tensor``'s value, computed or pending.

    Args:
        tensor: the tensor whose values are checked (nothing is done for an empty one).
        check: raises when the values are wrong; receives the flat array of the value.
        key: identifies the check, so that the same check of the same argument asked twice in
            one compiled function (``cross_entropy`` calls ``nll_loss``) runs once per replay.
    """
    if tensor.numel() == 0:
        return
    if tensor.is_cuda:  # checks read host values: one copy (and synchronisation) per check
        host_check = check

        def check(values: np.ndarray) -> None:
            host_check(to_host(values))
    source = _source_buffer(tensor.node)
    if source is None and capture.active() is None:
        tensor.realize()
        source = tensor.node
    if source is not None:
        # capture reads only ``.node``; a Tensor made for it would claim the buffer as its holder
        capture.check_values(_Source(source), check, key)
        return
    from .realize import run_graph
    check(np.ascontiguousarray(to_host(run_graph([tensor.node])[0])).reshape(-1))


class _Source(NamedTuple):
    node: Node


def _source_buffer(node: Node) -> Node | None:
    """The buffer holding exactly ``node``'s values (through reshapes and int32 -> int64
    widening), if there is one."""
    while node.op in _SAME_VALUES or (node.op == "cast" and node.dtype == "int64"
                                      and node.inputs[0].dtype in ("int32", "int64")):
        node = node.inputs[0]
    if node.op == "buffer" and node.attrs[0].data is not None:
        return node
    return None


def in_range_test(low: int, high: int) -> Callable[[np.ndarray], bool]:
    """``test(values)``: whether every element of a flat int32 or int64 array lies in
    ``[low, high)``.

    Made once per check and called on each value (checks run on every replay of a compiled
    step): on the numba_cpu backend a compiled one-pass kernel, loaded at the first call (numpy's
    ``min`` and ``max`` cost several times as much right after a step's kernels); numpy on the
    others.
    """
    from .realize import backend
    if backend() != "numba_cpu":
        return lambda values: bool(values.min() >= low and values.max() < high)
    bounds = np.array([low, high], np.int64)
    kernels: dict[np.dtype, Callable[[np.ndarray, np.ndarray], bool]] = {}  # int32, int64

    def test(values: np.ndarray) -> bool:
        kernel = kernels.get(values.dtype)
        if kernel is None:
            from ..backends.numba_cpu.checks import in_range_kernel
            kernel = kernels[values.dtype] = in_range_kernel(values.dtype.name)
        return bool(kernel(values, bounds))
    return test
