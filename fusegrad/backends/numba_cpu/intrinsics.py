"""LLVM-level helpers for generated kernels that Numba's Python subset cannot say."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are ``bits`` taken as an int32 (a bitcast; it vectorises).
    Numba widens integer arithmetic to int64: the call narrows it back."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def f64_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are ``bits`` taken as an int64 (a bitcast; it vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen
