"""Numba code for one scalar op: typed constants, the expression of an elementwise node with
numpy's dtype and NaN rules, and which ops may swap their operands. The loop nest around them is
decided in backends/lowering and printed by ``render.py``.
"""
from __future__ import annotations

import math

from ...errors import CodegenError
from ...ir.dtypes import is_float
from ...ir.node import Node


# ----------------------------------------------------------------------------- scalar code
def literal(value: float | bool, dtype: str) -> str:
    """A typed constant: ``np.float32(0.5)``, ``np.float32(-np.inf)``, ``np.int64(3)``, ``True``."""
    if dtype == "bool":
        return "True" if value else "False"
    if is_float(dtype):
        value = float(value)
        if math.isnan(value):
            text = "np.nan"
        elif math.isinf(value):
            text = "np.inf" if value > 0 else "-np.inf"
        else:
            text = repr(value)
    else:
        text = str(int(value))
    return f"np.{dtype}({text})"


# float32 tanh as a rational function of x (Eigen's): libm's scalar tanhf does not vectorise and
# ran ~28x slower than numpy on 1M elements; this one runs at numpy's speed, and over 4M points in
# [-12, 12] (geometric down to 1e-8) stays within 3.6e-7 relative (6 ulp) of np.tanh, with
# NaN, +-inf and -0.0 as numpy gives them.
TANH32_SOURCE = '''
@njit(cache=True, inline="always", error_model="numpy")
def _fg_tanh32(x):
    c = np.float32(7.90531110763549805)
    xc = c if x > c else (-c if x < -c else x)
    x2 = xc * xc
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x if abs(x) < np.float32(0.0004) else xc * p / q
'''

_UFUNC = {"exp": "np.exp", "log": "np.log", "sqrt": "np.sqrt", "sin": "np.sin", "cos": "np.cos",
          "tanh": "np.tanh"}
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_COMPARE = {"lt": "<", "le": "<=", "eq": "==", "ne": "!="}


def op_expr(node: Node, args: list[str]) -> str:
    """Scalar expression of an elementwise node, with numpy's result dtype and NaN rules.

    Numba widens integer arithmetic to int64, so integer results are cast back to the node's dtype;
    numpy's bool ``add``/``mul``/``maximum``/``minimum`` are logical or/and.
    """
    op, dt = node.op, node.dtype
    t = f"np.{dt}"
    src = node.inputs[0].dtype
    if op == "tanh" and dt == "float32":
        return f"_fg_tanh32({args[0]})"
    if op in _UFUNC:
        return f"{_UFUNC[op]}({args[0]})"
    if op == "recip":
        return f"{literal(1, dt)} / {args[0]}"
    if op == "neg":
        return f"-{args[0]}" if is_float(dt) else f"{t}(-{args[0]})"
    if op == "abs":
        return args[0] if dt == "bool" else f"{t}(abs({args[0]}))"
    if op == "detach":
        return args[0]
    if op == "cast":
        if dt == "bool":
            return f"{args[0]} != {literal(0, src)}"
        return f"{t}({args[0]})"
    if op in _COMPARE:
        return f"{args[0]} {_COMPARE[op]} {args[1]}"
    if op == "where":
        return f"{args[1]} if {args[0]} else {args[2]}"
    a, b = args[0], args[1] if len(args) > 1 else ""
    if dt == "bool":
        logical = {"add": "|", "mul": "&", "maximum": "|", "minimum": "&"}
        if op not in logical:
            raise CodegenError(f"{op} is not defined on bool tensors")
        return f"{a} {logical[op]} {b}"
    if op in ("maximum", "minimum"):
        if is_float(dt):  # numpy propagates NaN from either side
            cmp = ">" if op == "maximum" else "<"
            return f"{a} if ({a} {cmp} {b}) | ({a} != {a}) else {b}"
        return f"{'max' if op == 'maximum' else 'min'}({a}, {b})"
    if op in _ARITH:
        expr = f"{a} {_ARITH[op]} {b}"
        return expr if is_float(dt) else f"{t}({expr})"
    raise CodegenError(f"no Numba code for op {op!r}")


def _commutative(node: Node) -> bool:
    """Ops whose two operands can be swapped without changing a bit of the result (float
    ``maximum``/``minimum`` cannot: which NaN or which signed zero wins depends on the order)."""
    return node.op in ("add", "mul", "eq", "ne") or (
        node.op in ("maximum", "minimum") and not is_float(node.dtype))
