"""Rows of the op table: writes into an existing buffer (``assign``).

``assign(target, value)`` is a graph root, never an operand: a backend runs it after every read
of ``target`` in the same program, so the passes and fusion see only its value
(``backends.pipeline.split_assigns``). Its reference computes what the target holds after the
write; the backend does the writing.
"""
from __future__ import annotations

import numpy as np

from ..node import Node
from .spec import ANY, NOT_DIFFERENTIABLE, Category, OpSpec, declare


def _assign(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return args[1]


declare(
    # operands (target buffer leaf, value) of equal shape and dtype; the result is the target
    OpSpec("assign", 2, Category.STORE, ANY, "same", _assign, NOT_DIFFERENTIABLE),
)
