"""The numba_cuda renderer's entry for each elementwise primitive: its scalar CUDA expression.

The CPU renderer's expressions (``numba_cpu/scalar_ops.py``) are plain Numba scalar code and
serve here too, except the math functions: CUDA kernels call ``math.*`` (libdevice), and each
result is cast to the node's dtype, so float32 math stays float32 on the GPU and on the
simulator (where ``math`` returns Python floats). float32 ``tanh`` is the CPU's rational
function, as a device function, so both backends compute the same values.
"""
from __future__ import annotations

from ...errors import CodegenError
from ...ir.node import Node
from ..numba_cpu.scalar_ops import EXPRESSIONS as CPU_EXPRESSIONS
from ..numba_cpu.scalar_ops import TANH32_SOURCE, Expression

# the CPU helper's body, compiled as a CUDA device function instead of an inlined njit one
TANH32_DEVICE_SOURCE = TANH32_SOURCE.replace(
    '@njit(cache=True, inline="always", error_model="numpy")', "@cuda.jit(device=True)")
assert TANH32_DEVICE_SOURCE != TANH32_SOURCE, "the CPU tanh helper's decorator changed"


def _math(function: str) -> Expression:
    def expression(node: Node, args: list[str]) -> str:
        return f"np.{node.dtype}(math.{function}({args[0]}))"
    return expression


def _tanh(node: Node, args: list[str]) -> str:
    return f"_fg_tanh32({args[0]})" if node.dtype == "float32" else f"math.tanh({args[0]})"


def _pow(node: Node, args: list[str]) -> str:
    if node.dtype in ("float32", "float64"):
        return f"np.{node.dtype}(math.pow({args[0]}, {args[1]}))"
    return CPU_EXPRESSIONS["pow"](node, args)


EXPRESSIONS: dict[str, Expression] = {
    **CPU_EXPRESSIONS,
    "exp": _math("exp"),
    "log": _math("log"),
    "sqrt": _math("sqrt"),
    "sin": _math("sin"),
    "cos": _math("cos"),
    "erf": _math("erf"),
    "tanh": _tanh,
    "pow": _pow,
}


def op_expr(node: Node, args: list[str]) -> str:
    """Scalar CUDA expression of an elementwise node from its operands' expressions."""
    expression = EXPRESSIONS.get(node.op)
    if expression is None:
        raise CodegenError(f"no CUDA code for op {node.op!r}")
    return expression(node, args)
