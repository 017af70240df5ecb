"""The Numba renderer prints a loop nest as it is: a hand-built nest, its exact function text."""
from __future__ import annotations

import numpy as np

from fusegrad.backends.lowering.loopnest import (AccRef, Accumulate, Accumulator, Assign, AtLeast,
                                                 Below, CheckIndex, Conjunction, Convert, Flag,
                                                 Index, Lit, Loop, LoopNest, Param, Read, Ref,
                                                 Store, Term)
from fusegrad.backends.numba_cpu.render import render_module
from fusegrad.ir import ops
from fusegrad.ir.buffer import Buffer


def _function_lines(source: str) -> list[str]:
    lines = source.splitlines()
    return lines[lines.index(next(x for x in lines if x.startswith("@njit"))):]


def test_a_hand_built_nest_prints_as_numba():
    x = ops.buffer(Buffer.from_array(np.zeros((3, 4), np.float32)))
    inner = Loop("i1", 4, body=[
        Assign("v2", Read("in0", Index(1, (Term(Ref("i0"), 4), Term(Ref("i1"), 1))), "float32",
                          (Flag("c1"), Below(Ref("i1"), 0, 2, 2)))),
        Accumulate("sum", AccRef("acc3", Index(0, (Term(Ref("i1"), 1),))), Ref("v2"), "float32"),
    ])
    outer = Loop("i0", 3, parallel=True, body=[CheckIndex(Ref("i0"), 3, "bad"), inner],
                 hoisted=[Assign("c1", Conjunction((AtLeast(Ref("i0"), 1),)))])
    store = Loop("i1", 4, body=[
        Store("out0", Index(0, (Term(Ref("i1"), 1),)),
              Convert(AccRef("acc3", Index(0, (Term(Ref("i1"), 1),))), "float32"))])
    nest = LoopNest("k0_demo", "k_demo", (Param("out0", x, 0, True), Param("in0", x, 1, False)),
                    True, ("kernel k0_demo",), [Assign("seed0", Lit(7, "int64"))],
                    [Accumulator("acc3", "float64", 0, 4), outer, store], False)
    assert _function_lines(render_module(nest)) == [
        '@njit(cache=True, error_model="numpy", parallel=True)',
        "def k_demo(out0, in0):",
        "    seed0 = np.int64(7)",
        "    acc3 = np.full(4, np.float64(0.0), np.float64)",
        "    for i0 in prange(3):",
        "        c1 = i0 >= 1",
        "        if i0 < 0 or i0 >= 3:",
        "            raise IndexError('bad')",
        "        for i1 in range(4):",
        "            v2 = in0[1 + i0 * 4 + i1] if c1 and (i1 // 2) < 2 else np.float32(0.0)",
        "            acc3[i1] = sum_step(acc3[i1], v2)",
        "    for i1 in range(4):",
        "        out0[i1] = np.float32(acc3[i1])",
    ]
