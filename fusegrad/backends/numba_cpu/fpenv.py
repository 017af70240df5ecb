"""Denormal floats flushed to zero while a compiled program runs (x86-64: MXCSR's FTZ and DAZ).

An x86 core takes a microcode assist for each arithmetic operation on a denormal (a float32
below 1.18e-38 in magnitude, a float64 below 2.2e-308): the LSTM workload's backward pass makes
a few hundred of them among a million gradient values (products of small gate derivatives), and
one of its weight-gradient GEMMs took 7.0 ms on those operands against 2.3 ms on the same
operands with the denormals zeroed; the compiled step went from 64-66 to 52-53 ms. Adam's second
moments go denormal too: attn's step grew from 228 to 2216 ms within 60 steps without flushing.
TensorFlow and XLA run their CPU kernels with denormals flushed for the same reason. The wrapper
costs about 0.2 us per run (two Numba calls).

The flags are set on the calling thread for the duration of a program's ``run`` and restored
after it, exceptions included, so the user's own numpy code keeps IEEE gradual underflow. Inside
a program a denormal result is written as a zero of the same sign and a denormal input reads as
zero: values differ from torch's (which does not flush) only below 1.18e-38 (2.2e-308 in
float64). BLAS worker threads and the threads of ``prange`` kernels (off by default) keep their
own flags; the BLAS operands come from the program's kernels, so they meet no denormal that a
kernel made. ``FUSEGRAD_FLUSH_DENORMALS=0`` keeps gradual underflow everywhere; it is read when
a program's run is bound (its first run), not on every call.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Callable

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FTZ_DAZ = 0x8040  # MXCSR bit 15: flush results to zero; bit 6: read denormal inputs as zero


@intrinsic
def _read_mxcsr(typingctx):
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        function = builder.module.declare_intrinsic(
            "llvm.x86.sse.stmxcsr", fnty=ir.FunctionType(ir.VoidType(), [slot.type]))
        builder.call(function, [slot])
        return builder.load(slot)

    return types.int32(), codegen


@intrinsic
def _write_mxcsr(typingctx, value):
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once_value(builder, builder.trunc(args[0], ir.IntType(32))
                                         if args[0].type.width > 32 else args[0])
        function = builder.module.declare_intrinsic(
            "llvm.x86.sse.ldmxcsr", fnty=ir.FunctionType(ir.VoidType(), [slot.type]))
        builder.call(function, [slot])
        return context.get_dummy_value()

    return types.void(value), codegen


@njit(cache=True)
def _enter_x86() -> int:
    old = _read_mxcsr()
    _write_mxcsr(old | FTZ_DAZ)
    return old


@njit(cache=True)
def _leave_x86(old: int) -> None:
    _write_mxcsr(old)


def flush_denormals_enabled() -> bool:
    """Whether programs run with denormals flushed (x86-64, unless
    ``FUSEGRAD_FLUSH_DENORMALS=0``)."""
    return platform.machine().lower() in ("x86_64", "amd64") \
        and os.environ.get("FUSEGRAD_FLUSH_DENORMALS", "1") != "0"


def flushing(run: Callable[[list], list]) -> Callable[[list], list]:
    """``run`` called with denormals flushed on this thread and the flags restored after it
    (``run`` itself where flushing is off)."""
    if not flush_denormals_enabled():
        return run
    enter, leave = _enter_x86, _leave_x86

    def flushed(inputs: list) -> list:
        old = enter()
        try:
            return run(inputs)
        finally:
            leave(old)

    return flushed


def read_control_word() -> int:
    """This thread's MXCSR (x86-64 only; for tests)."""
    return int(_read_mxcsr_py())


@njit(cache=True)
def _read_mxcsr_py() -> int:
    return _read_mxcsr()
