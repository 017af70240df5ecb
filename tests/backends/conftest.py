"""Shared set-up for backend tests: a persistent kernel cache and hand-built schedules.

The cache folder is set before any test imports the backend, so a second test run loads every
kernel instead of compiling it (a Numba compile costs ~0.1 s).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("FUSEGRAD_CACHE_DIR", str(REPO_ROOT / ".fusegrad-cache"))

from fusegrad.backends.interpreter import evaluate
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.node import Node
from fusegrad.ir.schedule import Extern, Kernel, Load, Schedule
from fusegrad.ir.view import View

_MOVEMENT = ("reshape", "permute", "expand", "slice", "pad")


class ScheduleBuilder:
    """Builds Kernels and Externs from IR nodes the way the fuser would, for tests only.

    ``materialised`` holds the nodes that own buffers (inputs and items' outputs so far); a chain
    of movement ops down to one of them becomes a Load through the composed View.
    """

    def __init__(self, inputs: list[Node]):
        self.inputs = list(inputs)
        self.materialised: set[Node] = set(inputs)
        self.items: list[Kernel | Extern] = []

    def view_of(self, node: Node, exclude: set[Node]) -> Load | None:
        if node in self.materialised and node not in exclude:
            return Load(node, View.contiguous(node.shape))
        if node.op not in _MOVEMENT:
            return None
        inner = self.view_of(node.inputs[0], exclude)
        if inner is None:
            return None
        v = inner.view
        if node.op == "reshape":
            v = v.reshape(node.shape)
        elif node.op == "permute":
            v = v.permute(node.attrs[0])
        elif node.op == "expand":
            v = v.expand(node.shape)
        elif node.op == "slice":
            v = v.slice(node.attrs[0])
        else:
            v = v.pad(node.shape, node.attrs[0])
        return None if v is None else Load(inner.src, v)

    def kernel(self, name: str, outputs: list[Node], shape: tuple[int, ...],
               reduce_axes: tuple[int, ...] = ()) -> Kernel:
        body: list[Node] = []
        loads: dict[Node, Load] = {}
        done: set[Node] = set()
        outs = set(outputs)

        def visit(n: Node) -> None:
            if n in done:
                return
            done.add(n)
            load = self.view_of(n, outs)
            if load is not None:
                loads[n] = load
                return
            if n.op == "const":
                return
            for i in n.inputs:
                visit(i)
            if n.op not in ("rand", "expand"):
                body.append(n)

        for o in outputs:
            visit(o)
        k = Kernel(name, shape, reduce_axes, tuple(body), loads, tuple(outputs))
        self.items.append(k)
        self.materialised.update(outputs)
        return k

    def extern(self, name: str, node: Node) -> Extern:
        loads = tuple(self.view_of(i, set()) for i in node.inputs)
        assert all(ld is not None for ld in loads)
        e = Extern(name, node, loads)
        self.items.append(e)
        self.materialised.add(node)
        return e

    def schedule(self, outputs: list[Node]) -> Schedule:
        return Schedule(list(self.items), self.inputs, list(outputs))


def leaf(array: np.ndarray, loc: str | None = None) -> Node:
    """A buffer leaf holding ``array``."""
    return ops.buffer(Buffer.from_array(np.asarray(array)), loc)


def run_and_compare(schedule: Schedule, rtol: float = 1e-5, atol: float = 1e-6, runs: int = 2):
    """Compile ``schedule``, run it ``runs`` times and compare every output with the interpreter."""
    from fusegrad.backends.numba_cpu import compile_schedule

    program = compile_schedule(schedule)
    expected = evaluate(schedule.outputs)
    inputs = [n.attrs[0].data for n in schedule.inputs]
    for _ in range(runs):
        got = program.run(inputs)
        assert len(got) == len(expected)
        for g, e, node in zip(got, expected, schedule.outputs):
            assert g.ndim == 1 and g.flags.c_contiguous and g.dtype == e.dtype, node
            g = g.reshape(node.shape)
            if np.issubdtype(e.dtype, np.floating):
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=repr(node))
            else:
                np.testing.assert_array_equal(g, e, err_msg=repr(node))
    return program


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# Helpers are handed out as fixtures: test folders each have a conftest, so ``import conftest``
# would be ambiguous.
@pytest.fixture
def builder() -> type[ScheduleBuilder]:
    return ScheduleBuilder


@pytest.fixture(name="leaf")
def leaf_fixture():
    return leaf


@pytest.fixture
def check():
    return run_and_compare
