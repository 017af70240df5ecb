"""Rows of the op table: leaves (buffers, constants, random numbers)."""
from __future__ import annotations

import numpy as np

from ..dtypes import to_numpy
from ..node import Node
from ..random import uniform_numpy
from .spec import ANY, NOT_DIFFERENTIABLE, Category, OpSpec, declare


def _buffer(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return node.attrs[0].numpy()


def _const(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return np.full(node.shape, node.attrs[0], dtype=to_numpy(node.dtype))


def _rand(node: Node, args: list[np.ndarray]) -> np.ndarray:
    seed, offset = (int(v) for v in args[0])
    return uniform_numpy(seed, offset, node.shape, node.dtype)


declare(
    OpSpec("buffer", 0, Category.LEAF, ANY, "given", _buffer, NOT_DIFFERENTIABLE),
    OpSpec("const", 0, Category.LEAF, ANY, "given", _const, NOT_DIFFERENTIABLE),
    # the one input is the int64[2] (seed, offset) key; the result dtype is a float
    OpSpec("rand", 1, Category.LEAF, frozenset({"int64"}), "given", _rand, NOT_DIFFERENTIABLE),
)
