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


@intrinsic
def sum_step(typingctx, acc, x):
    """``acc + x`` (``x`` converted to ``acc``'s float type) as an add that LLVM may reassociate.

    Python's ``acc += x`` is an exact IEEE add, so LLVM must keep the loop's order: one add per
    add latency, unvectorised. Marked ``reassoc`` (this add alone, not the code around it), the
    loop vectoriser keeps several partial sums and adds them up after the loop: a sum of 10M
    float32 values into a float64 went from 16 to 1.6 ms. The order is fixed by the compiled
    loop, so a kernel gives the same bits on every run. The renderer uses it for float32 terms
    added into a float64 only: the order changes the float64 sum by about n * 2^-53 * sum(|x|),
    so rounded to float32 the same sum in two kernels fused differently (a compiled step and
    an eager one) agrees unless the terms cancel to far below sum(|x|) (2^60 + 1 - 2^60 is 0 in
    order and may be 1 in lanes) or the result is within that of a rounding tie. float64 sums
    keep their order.
    """
    if not (isinstance(acc, types.Float) and isinstance(x, (types.Float, types.Integer,
                                                            types.Boolean))):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[1], signature.args[1], signature.args[0])
        return builder.fadd(args[0], value, flags=("reassoc",))

    return acc(acc, x), codegen


@intrinsic
def max_step(typingctx, acc, x):
    """The larger of ``acc`` and ``x``, NaN if either is NaN (LLVM's ``llvm.maximum``; +0.0 counts
    as larger than -0.0), as a call LLVM vectorises into a max reduction (10M float32: 21 ms as
    a compare and branch, 2.5 ms this way)."""
    if not (isinstance(acc, types.Float) and acc == x):
        return None

    def codegen(context, builder, signature, args):
        kind = args[0].type
        function = builder.module.declare_intrinsic("llvm.maximum", [kind],
                                                    ir.FunctionType(kind, [kind, kind]))
        return builder.call(function, args)

    return acc(acc, x), codegen
