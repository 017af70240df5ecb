"""Rows of the op table: writes into an existing buffer (``assign``), and the deferred nodes,
which no backend ever sees: the gradient (``grad``) and the macro (``ir/macro.py``).

``assign(target, value)`` is a graph root, never an operand: a backend runs it after every read
of ``target`` in the same program, so the passes and fusion see only its value
(``backends.pipeline.split_assigns``). Its reference computes what the target holds after the
write; the backend does the writing.
"""
from __future__ import annotations

import numpy as np

from ..node import Node
from .spec import ANY, FLOAT, NOT_DIFFERENTIABLE, VARIADIC, Category, OpSpec, declare


def _assign(node: Node, args: list[np.ndarray]) -> np.ndarray:
    return args[1]


def _deferred(node: Node, args: list[np.ndarray]) -> np.ndarray:
    raise ValueError(f"{node!r} stands for a gradient graph: expand it first "
                     "(ir.autodiff.expand_gradients)")


def _macro(node: Node, args: list[np.ndarray]) -> np.ndarray:
    raise ValueError(f"{node!r} stands for a subgraph: expand it first "
                     "(ir.macro.expand_macros)")


def _macro_vjp(node: Node, grad: Node) -> tuple:
    raise ValueError(f"{node!r} stands for a subgraph: differentiate its expansion "
                     "(ir.autodiff.backward expands macros first)")


declare(
    # operands (target buffer leaf, value) of equal shape and dtype; the result is the target
    OpSpec("assign", 2, Category.STORE, ANY, "same", _assign, NOT_DIFFERENTIABLE),
    # operands (root, seed, leaf): the gradient of root, weighted by seed, with respect to leaf,
    # as ``backward()`` leaves it; compiling (or interpreting) a graph expands it first
    OpSpec("grad", 3, Category.DEFERRED, FLOAT, "same", _deferred, NOT_DIFFERENTIABLE),
    # output attrs[2] of the subgraph ``EXPANDERS[attrs[0]](inputs, attrs[1], loc)`` builds;
    # differentiable in every input (its rule is never called: backward expands it first)
    OpSpec("macro", VARIADIC, Category.DEFERRED, FLOAT, "same", _macro, _macro_vjp),
)
