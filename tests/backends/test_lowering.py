"""The lowering on its own: a small Kernel becomes the expected loop nest (loops, merged dims,
hoisted mask conditions, accumulators), with no renderer involved."""
from __future__ import annotations

import numpy as np

from fusegrad.backends.lowering import lower
from fusegrad.backends.lowering.hoist import OpenLoop, hoist
from fusegrad.backends.lowering.loopnest import (Accumulate, Accumulator, Apply, Assign, AtLeast,
                                                 Below, Conjunction, Convert, Divisible, Flag,
                                                 Index, Loop, LoopNest, Never, Read, Ref, Store,
                                                 Term, walk)
from fusegrad.backends.lowering.lower import flat_index
from fusegrad.ir import ops
from fusegrad.ir.node import Node


def _loops(nest: LoopNest) -> list[Loop]:
    return [s for s in walk(nest.body) if isinstance(s, Loop)]


def _of(nest: LoopNest, kind: type) -> list:
    return [s for s in walk(nest.prelude + nest.body) if isinstance(s, kind)]


def _reads(nest: LoopNest) -> list[Read]:
    return [s.value for s in _of(nest, Assign) if isinstance(s.value, Read)]


def test_contiguous_dims_merge_into_one_loop(builder, leaf):
    x = leaf(np.ones((4, 6, 5), np.float32))
    y = ops.unary("exp", x)
    b = builder([x])
    nest = lower(b.kernel("k_exp", [y], y.shape), False)
    [loop] = _loops(nest)
    assert (loop.var, loop.extent, loop.parallel) == ("i0", 120, False)
    [store] = _of(nest, Store)
    assert store.index == Index(0, (Term(Ref("i0"), 1),))
    assert [p.name for p in nest.params] == ["out0", "in0"]


def test_a_transposed_read_keeps_one_loop_per_dim(builder, leaf):
    x = leaf(np.ones((4, 6), np.float32))
    t = ops.permute(x, (1, 0))
    y = ops.binary("add", t, ops.const(1.0, t.shape, "float32"))
    b = builder([x])
    nest = lower(b.kernel("k_t", [y], y.shape), True)
    outer, inner = _loops(nest)
    assert (outer.extent, inner.extent) == (6, 4)
    assert outer.parallel and not inner.parallel and nest.parallel
    [read] = _reads(nest)
    assert read.index == Index(0, (Term(Ref("i0"), 1), Term(Ref("i1"), 6)))


def test_a_mask_on_an_outer_loop_is_hoisted_into_a_flag(builder, leaf):
    x = leaf(np.ones((3, 1, 8), np.float32))
    z = leaf(np.ones((3, 4, 8), np.float32))
    padded = ops.pad(x, (3, 4, 8), ((0, 1), (2, 1), (0, 1)))
    y = ops.binary("mul", padded, z)
    b = builder([x, z])
    nest = lower(b.kernel("k_pad", [y], y.shape), False)
    assert [(lp.var, lp.extent) for lp in _loops(nest)] == [("i0", 3), ("i1", 4), ("i2", 8)]
    middle = _loops(nest)[1]
    [flag] = middle.hoisted
    assert flag.value == Conjunction((AtLeast(Ref("i1"), 2), Below(Ref("i1"), 2, 1, 1)))
    masked = [r for r in _reads(nest) if r.conds]
    assert len(masked) == 1 and masked[0].conds == (Flag(flag.name),)
    assert masked[0].index == Index(0, (Term(Ref("i0"), 8), Term(Ref("i2"), 1)))


def test_a_mask_on_the_innermost_loop_stays_inline(builder, leaf):
    x = leaf(np.ones((4, 3), np.float32))
    padded = ops.pad(x, (4, 8), ((0, 1), (1, 2)))
    y = ops.unary("neg", padded)
    b = builder([x])
    nest = lower(b.kernel("k_pad_inner", [y], y.shape), False)
    assert all(not lp.hoisted for lp in _loops(nest))
    [read] = _reads(nest)
    assert read.conds == (Divisible(Ref("i1"), 1, 2), AtLeast(Ref("i1"), 1),
                          Below(Ref("i1"), 1, 2, 3))
    assert read.index == Index(0, (Term(Ref("i0"), 3), Term(Ref("i1"), 1, 1, 2)))


def test_a_float32_row_sum_accumulates_in_float64_and_rounds_once(builder, leaf):
    x = leaf(np.ones((4, 6), np.float32))
    s = ops.reduce("sum", x, (1,))
    b = builder([x])
    nest = lower(b.kernel("k_rows", [s], (4, 6), (1,)), True)
    [acc] = _of(nest, Accumulator)
    assert (acc.dtype, acc.init, acc.count) == ("float64", 0, None)
    [update] = _of(nest, Accumulate)
    assert update.kind == "sum" and update.acc.name == acc.name and update.dtype == "float32"
    rounded = [a for a in _of(nest, Assign) if isinstance(a.value, Convert)]
    assert [a.value for a in rounded] == [Convert(Ref(acc.name), "float32")]
    kept, reduced = _loops(nest)
    assert kept.parallel and not reduced.parallel and reduced in kept.body
    assert update in reduced.body


def test_max_and_float64_sum_accumulate_in_their_own_dtype(builder, leaf):
    x = leaf(np.ones((4, 6), np.float64))
    b = builder([x])
    nest = lower(b.kernel("k_both", [ops.reduce("sum", x, (1,)), ops.reduce("max", x, (1,))],
                          (4, 6), (1,)), False)
    inits = sorted((a.dtype, a.init) for a in _of(nest, Accumulator))
    assert inits == [("float64", -np.inf), ("float64", 0)]
    assert not [a for a in _of(nest, Assign) if isinstance(a.value, Convert)]
    assert len(_loops(nest)) == 2  # both reductions share one pass (kept loop, reduced loop)


def test_a_column_sum_puts_the_reduced_loop_outside(builder, leaf):
    x = leaf(np.ones((64, 16), np.float32))
    s = ops.reduce("sum", x, (0,))
    b = builder([x])
    nest = lower(b.kernel("k_cols", [s], (64, 16), (0,)), False)
    [acc] = _of(nest, Accumulator)
    assert (acc.dtype, acc.count) == ("float64", 16)
    outer, inner, store_loop = _loops(nest)
    assert (outer.var, outer.extent, inner.var, inner.extent) == ("i0", 64, "i1", 16)
    assert inner in outer.body
    [update] = _of(nest, Accumulate)
    assert update.acc.index == Index(0, (Term(Ref("i1"), 1),))
    [store] = _of(nest, Store)
    assert store in store_loop.body and isinstance(store.value, Convert)


def test_a_parallel_column_sum_keeps_the_kept_loop_outside(builder, leaf):
    x = leaf(np.ones((64, 16), np.float32))
    b = builder([x])
    nest = lower(b.kernel("k_cols", [ops.reduce("sum", x, (0,))], (64, 16), (0,)), True)
    outer, inner = _loops(nest)
    assert (outer.var, outer.parallel, inner.var) == ("i1", True, "i0")
    assert all(a.count is None for a in _of(nest, Accumulator))


def test_a_reduction_to_one_value_has_no_parallel_loop(builder, leaf):
    x = leaf(np.ones((4, 6), np.float32))
    b = builder([x])
    nest = lower(b.kernel("k_total", [ops.reduce("sum", x, (0, 1))], (4, 6), (0, 1)), True)
    [loop] = _loops(nest)
    assert loop.extent == 24 and not loop.parallel and not nest.parallel


def test_commutative_operands_take_a_canonical_order(builder, leaf):
    """The op table says which operands may swap: float add may, float maximum may not (which
    signed zero or NaN comes out depends on the order)."""
    x = leaf(np.ones(8, np.float32))
    z = leaf(np.full(8, 2, np.float32))
    e = ops.unary("exp", z)
    b = builder([x, z])

    def operands(nest: LoopNest, op: str) -> tuple:
        [value] = [a.value for a in _of(nest, Assign)
                   if isinstance(a.value, Apply) and a.value.node.op == op]
        return value.args

    first = lower(b.kernel("k_a", [ops.binary("add", x, e)], (8,)), False)
    second = lower(b.kernel("k_b", [ops.binary("add", e, x)], (8,)), False)
    assert operands(first, "add") == operands(second, "add")
    kept = lower(b.kernel("k_c", [ops.binary("maximum", x, e)], (8,)), False)
    swapped = lower(b.kernel("k_d", [ops.binary("maximum", e, x)], (8,)), False)
    assert operands(kept, "maximum") != operands(swapped, "maximum")


def test_hoist_groups_conditions_per_loop_and_reuses_flags():
    loops = [OpenLoop(Loop("i0", 3)), OpenLoop(Loop("i1", 4)), OpenLoop(Loop("i2", 5))]
    names = iter(("c1", "c2", "c3"))
    on_outer = [AtLeast(Ref("i0"), 1), Below(Ref("i0"), 1, 1, 1)]
    on_middle = AtLeast(Ref("i1"), 2)
    inner = Below(Ref("i2"), 0, 1, 2)
    on_value = AtLeast(Ref("v7"), 0)
    got = hoist(on_outer + [on_middle, inner, on_value, Never()], loops, lambda _: next(names))
    assert got == [Flag("c2"), Flag("c1"), inner, on_value, Never()]
    assert loops[0].loop.hoisted == [Assign("c1", Conjunction(tuple(on_outer)))]
    assert loops[1].loop.hoisted == [Assign("c2", Conjunction((on_middle,)))]
    assert hoist(on_outer, loops, lambda _: next(names)) == [Flag("c1")]
    assert len(loops[0].loop.hoisted) == 1


def test_flat_index_of_a_strided_mask():
    index, conds = flat_index(5, [(Ref("i0"), 4, 10, None), (Ref("i1"), 9, 3, (1, 2, 4)),
                                  (Ref("i2"), 1, 7, None), (Ref("i3"), 6, 2, (0, 1, 0))])
    assert index == Index(5, (Term(Ref("i0"), 10), Term(Ref("i1"), 3, 1, 2)))
    assert conds == [Divisible(Ref("i1"), 1, 2), AtLeast(Ref("i1"), 1), Below(Ref("i1"), 1, 2, 4),
                     Never()]


def test_values_of_single_elements_are_computed_before_the_loop(builder, leaf):
    """A hyperparameter (a 0-d buffer broadcast over the kernel) is read, and what depends only
    on it computed, once before the loop; per element, every value comes before the first store
    (an output may be written over an array the kernel reads)."""
    p = leaf(np.ones((4, 6), np.float32))
    lr = leaf(np.array(0.5, np.float32))
    scale = ops.unary("neg", ops.expand(ops.reshape(lr, (1, 1)), (4, 6)))
    new = ops.binary("add", p, ops.binary("mul", p, scale))
    doubled = ops.binary("mul", p, p)
    b = builder([p, lr])
    nest = lower(b.kernel("k_update", [new, doubled], (4, 6)), False)
    [loop] = _loops(nest)
    before = [s for s in nest.body if isinstance(s, Assign)]
    assert [type(s.value) for s in before] == [Read, Apply]          # lr, then -lr
    assert before[0].value.index == Index(0, ())
    kinds = [type(s) for s in loop.body]
    assert kinds[-2:] == [Store, Store] and Store not in kinds[:-2]
