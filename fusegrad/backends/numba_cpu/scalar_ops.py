"""The numba_cpu renderer's entry for each elementwise primitive: its scalar Numba expression.

``EXPRESSIONS`` is keyed by op name and holds one entry per elementwise op of the op table
(``ir/optable``; tests/ir/test_optable.py checks the two agree). An entry takes the node and
its operands' expressions and returns the node's value with numpy's result dtype and NaN rules.
Numba widens integer arithmetic to int64, so integer results are cast back to the node's dtype;
numpy's bool ``add``/``mul``/``maximum``/``minimum`` are logical or/and. Generated modules
import ``math`` and ``numpy as np``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from ...ir.dtypes import is_float
from ...errors import CodegenError
from ...ir.node import Node

Expression = Callable[[Node, list[str]], str]


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

# float64 tanh (Cephes' tanh, with Cephes' exp inlined): libm's scalar tanh does not vectorise
# (about 17-20 ns per element here, 18 ns inside the unrolled LSTMCell's gate kernels); this one
# computes both of Cephes' branches without jumps, so the loop vectorises: 4.4 ns per element, and
# over 6M points in [-25, 25] (geometric down to 1e-300) it stays within 2 ulp of np.tanh, with NaN,
# +-inf, -0.0 and subnormals as numpy gives them. |x| >= 0.625: 1 - 2 / (exp(2|x|) + 1), where
# exp(w) = (q + p) / (q - p) * 2^n (w capped at 40: tanh is 1.0 in float64 beyond |x| = 19.1),
# one division for both; below: x + x^3 P(x^2) / Q(x^2).
TANH64_SOURCE = '''
from fusegrad.backends.numba_cpu.intrinsics import f64_from_bits


@njit(cache=True, inline="always", error_model="numpy")
def _fg_tanh64(x):
    z = abs(x)
    w = np.float64(40.0) if z > np.float64(20.0) else np.float64(2.0) * z
    fn = np.floor(w * np.float64(1.4426950408889634073599) + np.float64(0.5))
    r = w - fn * np.float64(6.93145751953125e-1)
    r = r - fn * np.float64(1.42860682030941723212e-6)
    rr = r * r
    p = ((np.float64(1.26177193074810590878e-4) * rr + np.float64(3.02994407707441961300e-2))
         * rr + np.float64(9.99999999999999999910e-1)) * r
    q = ((np.float64(3.00198505138664455042e-6) * rr + np.float64(2.52448340349684104192e-3))
         * rr + np.float64(2.27265548208155028766e-1)) * rr + np.float64(2.00000000000000000009e0)
    n = np.int64(fn if fn == fn else np.float64(0.0))
    d = q - p
    big = np.float64(1.0) - np.float64(2.0) * d / (
        (q + p) * f64_from_bits((n + np.int64(1023)) << np.int64(52)) + d)
    big = -big if x < np.float64(0.0) else big
    s = x * x
    num = ((np.float64(-9.64399179425052238628e-1) * s + np.float64(-9.92877231001918586564e1))
           * s + np.float64(-1.61468768441708447952e3))
    den = (((s + np.float64(1.12811678491632931402e2)) * s + np.float64(2.23548839060100448583e3))
           * s + np.float64(4.84406305325125486048e3))
    small = x + x * s * (num / den) if s != np.float64(0.0) else x
    return small if z < np.float64(0.625) else (big if z == z else x)
'''

# float32 exp (Cephes' expf: x = n ln2 + r, a degree-7 polynomial in r, 2^n from its bits, in two
# factors so that gradual underflow rounds once per factor): libm's scalar expf does not
# vectorise; this one ran 3.2x faster on 10M elements, and over 20M points in [-110, 90] stays
# within 8.1e-8 relative of the exact exp (numpy's own float32 exp: 2.1e-7), at most 3 ulp from
# np.exp, with NaN, +-inf, overflow to inf and underflow to 0 as numpy gives them.
EXP32_SOURCE = '''
from fusegrad.backends.numba_cpu.intrinsics import f32_from_bits


@njit(cache=True, inline="always", error_model="numpy")
def _fg_exp32(x):
    hi = np.float32(88.72283935546875)
    lo = np.float32(-103.97208404541016)
    xc = hi if x > hi else (lo if x < lo else x)
    fn = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
    r = xc - fn * np.float32(0.693359375)
    r = r - fn * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * (r * r) + r + np.float32(1.0)
    n = np.int32(fn if fn == fn else np.float32(0.0))
    h = n >> np.int32(1)
    y = y * f32_from_bits((h + np.int32(127)) << np.int32(23))
    y = y * f32_from_bits((n - h + np.int32(127)) << np.int32(23))
    return np.float32(np.inf) if x > hi else (np.float32(0.0) if x < lo else y)
'''


def _call(function: str) -> Expression:
    return lambda node, args: f"{function}({args[0]})"


def _typed(node: Node, expr: str) -> str:
    """``expr`` as is for floats; cast back to the node's integer dtype (Numba widens to int64)."""
    return expr if is_float(node.dtype) else f"np.{node.dtype}({expr})"


def _arith(symbol: str, logical: str | None = None) -> Expression:
    def expression(node: Node, args: list[str]) -> str:
        if node.dtype == "bool":
            if logical is None:
                raise CodegenError(f"{node.op} is not defined on bool tensors")
            return f"{args[0]} {logical} {args[1]}"
        return _typed(node, f"{args[0]} {symbol} {args[1]}")
    return expression


def _select(compare: str, builtin: str, logical: str) -> Expression:
    def expression(node: Node, args: list[str]) -> str:
        a, b = args
        if node.dtype == "bool":
            return f"{a} {logical} {b}"
        if is_float(node.dtype):  # numpy propagates NaN from either side
            return f"{a} if ({a} {compare} {b}) | ({a} != {a}) else {b}"
        return f"{builtin}({a}, {b})"
    return expression


def _compare(symbol: str) -> Expression:
    return lambda node, args: f"{args[0]} {symbol} {args[1]}"


def _exp(node: Node, args: list[str]) -> str:
    return f"_fg_exp32({args[0]})" if node.dtype == "float32" else f"np.exp({args[0]})"


def _tanh(node: Node, args: list[str]) -> str:
    return f"_fg_tanh32({args[0]})" if node.dtype == "float32" else f"_fg_tanh64({args[0]})"


def _neg(node: Node, args: list[str]) -> str:
    return f"-{args[0]}" if is_float(node.dtype) else f"np.{node.dtype}(-{args[0]})"


def _abs(node: Node, args: list[str]) -> str:
    return args[0] if node.dtype == "bool" else f"np.{node.dtype}(abs({args[0]}))"


def _cast(node: Node, args: list[str]) -> str:
    if node.dtype == "bool":
        return f"{args[0]} != {literal(0, node.inputs[0].dtype)}"
    return f"np.{node.dtype}({args[0]})"


EXPRESSIONS: dict[str, Expression] = {
    "neg": _neg,
    "exp": _exp,
    "log": _call("np.log"),
    "sqrt": _call("np.sqrt"),
    "recip": lambda node, args: f"{literal(1, node.dtype)} / {args[0]}",
    "sin": _call("np.sin"),
    "cos": _call("np.cos"),
    "tanh": _tanh,
    "erf": _call("math.erf"),
    "abs": _abs,
    "cast": _cast,
    "detach": lambda node, args: args[0],
    "add": _arith("+", logical="|"),
    "sub": _arith("-"),
    "mul": _arith("*", logical="&"),
    "div": _arith("/"),
    "pow": _arith("**"),
    "maximum": _select(">", "max", "|"),
    "minimum": _select("<", "min", "&"),
    "lt": _compare("<"),
    "le": _compare("<="),
    "eq": _compare("=="),
    "ne": _compare("!="),
    "where": lambda node, args: f"{args[1]} if {args[0]} else {args[2]}",
}


def op_expr(node: Node, args: list[str]) -> str:
    """Scalar expression of an elementwise node from its operands' expressions."""
    expression = EXPRESSIONS.get(node.op)
    if expression is None:
        raise CodegenError(f"no Numba code for op {node.op!r}")
    return expression(node, args)
