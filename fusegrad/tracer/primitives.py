"""Tensor functions for the user-facing primitives of the op table (``OpSpec.api``).

A unary elementwise primitive whose table row names a public ``api`` becomes
``fusegrad.<api>``, ``Tensor.<api>`` and the in-place ``Tensor.<api>_`` from its row alone;
integer and bool inputs are promoted to the default float dtype where the row accepts only
floats, as torch does.
"""
from __future__ import annotations

from collections.abc import Callable

from ..ir.optable import Category, OpSpec, user_facing
from . import functions as F
from .tensor import Tensor


def primitive_function(spec: OpSpec) -> Callable[[Tensor], Tensor]:
    """The public function applying the unary elementwise primitive ``spec`` to a tensor."""
    if spec.category is not Category.ELEMENTWISE or spec.arity != 1 or spec.api is None:
        raise ValueError(f"{spec.name}: only unary elementwise rows can name a public api")

    def function(input: Tensor) -> Tensor:  # noqa: A002 - torch's parameter name
        return F.unary(spec.name, input)

    function.__name__ = function.__qualname__ = spec.api
    function.__doc__ = (f"``{spec.api}`` of each element (the IR primitive ``{spec.name}``, "
                        "with its gradient).\n\n    Args:\n        input: the tensor.\n    ")
    return function


FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    spec.api: primitive_function(spec) for spec in user_facing() if spec.api is not None}
