"""Shared helpers for the pass tests: buffer leaves and the value-preservation check."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fusegrad.backends.interpreter import evaluate
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer
from fusegrad.ir.graph import Graph
from fusegrad.ir.node import Node


def buffer_of(array: np.ndarray) -> Node:
    """A buffer leaf holding ``array``."""
    return ops.buffer(Buffer.from_array(np.asarray(array)))


def assert_same_values(before: Graph, after: Graph) -> None:
    """``after`` has the outputs of ``before``: same count, shapes, dtypes and values."""
    assert len(after.outputs) == len(before.outputs)
    for a, b in zip(before.outputs, after.outputs):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    for want, got in zip(evaluate(before.outputs), evaluate(after.outputs)):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def f32(rng: np.random.Generator) -> Callable[..., Node]:
    """``f32(*shape)``: a float32 buffer leaf of that shape with random normal values."""
    return lambda *shape: buffer_of(rng.standard_normal(shape).astype(np.float32))


@pytest.fixture(scope="session")
def same_values() -> Callable[[Graph, Graph], None]:
    return assert_same_values


@pytest.fixture(scope="session")
def leaf() -> Callable[[np.ndarray], Node]:
    """``leaf(array)``: a buffer leaf holding ``array``."""
    return buffer_of
