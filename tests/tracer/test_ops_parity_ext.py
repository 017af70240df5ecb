"""The everyday API of issue 12 against PyTorch, forward and gradient, on every backend.

Same helper as ``test_ops_parity.py`` (one function per case, written once for both
libraries). Integer divisors are made odd (``2 * j + 1``) so that they are never zero.
"""
from __future__ import annotations

import pytest
from parity import boolean, case, f32, i64, parity_tests

INF, NAN = float("inf"), float("nan")


def _odd(j):
    return j * 2 + 1


DIVMOD = [
    case("mod", lambda lib, x, y: x % y, f32(3, 4, low=-5, high=5), f32(3, 4, away_from_zero=0.5)),
    case("mod_scalar", lambda lib, x: x % 1.5, f32(3, 4, low=-5, high=5)),
    case("mod_negative_scalar", lambda lib, x: x % -1.5, f32(3, 4, low=-5, high=5)),
    # torch has no derivative of a number % tensor
    case("rmod", lambda lib, y: (5.5 % y).detach(), f32(3, 4, away_from_zero=0.5)),
    case("mod_broadcast", lambda lib, x, y: x % y, f32(3, 4, low=-5, high=5),
         f32(4, away_from_zero=0.5)),
    case("remainder_fn", lambda lib, x, y: lib.remainder(x, y), f32(3, 4, low=-5, high=5),
         f32(3, 4, away_from_zero=0.5)),
    case("mod_int", lambda lib, i, j: i % _odd(j), i64(3, 4, low=-9, high=9), i64(3, 4)),
    case("mod_int_scalar", lambda lib, i: (i % 3, i % -3), i64(3, 4, low=-9, high=9)),
    case("rmod_int", lambda lib, j: 7 % _odd(j), i64(3, 4)),
    case("mod_int_float_scalar", lambda lib, i: i % 2.5, i64(3, 4, low=-9, high=9)),
    case("floordiv_float", lambda lib, x, y: (x // y).detach(), f32(3, 4, low=-5, high=5),
         f32(3, 4, away_from_zero=0.5)),
    case("floordiv_scalar", lambda lib, x: (x // 0.7).detach(), f32(3, 4, low=-5, high=5)),
    case("rfloordiv", lambda lib, y: (3.0 // y).detach(), f32(3, 4, away_from_zero=0.5)),
    case("floordiv_int", lambda lib, i, j: i // _odd(j), i64(3, 4, low=-9, high=9), i64(3, 4)),
    case("floordiv_int_scalar", lambda lib, i: (i // 2, i // -2), i64(3, 4, low=-9, high=9)),
    case("rfloordiv_int", lambda lib, j: -7 // _odd(j), i64(3, 4)),
    case("floor_divide_fn", lambda lib, i, j: lib.floor_divide(i, _odd(j)),
         i64(3, 4, low=-9, high=9), i64(3, 4)),
    case("fmod", lambda lib, x, y: lib.fmod(x, y), f32(3, 4, low=-5, high=5),
         f32(3, 4, away_from_zero=0.5)),
    case("fmod_scalar", lambda lib, x: x.fmod(-1.5), f32(3, 4, low=-5, high=5)),
    case("fmod_int", lambda lib, i, j: lib.fmod(i, _odd(j)), i64(3, 4, low=-9, high=9), i64(3, 4)),
    case("div_floor", lambda lib, x, y: lib.div(x, y, rounding_mode="floor").detach(),
         f32(3, 4, low=-5, high=5), f32(3, 4, away_from_zero=0.5)),
    case("div_trunc", lambda lib, x, y: lib.div(x, y, rounding_mode="trunc").detach(),
         f32(3, 4, low=-5, high=5), f32(3, 4, away_from_zero=0.5)),
    case("div_trunc_int", lambda lib, i, j: lib.div(i, _odd(j), rounding_mode="trunc"),
         i64(3, 4, low=-9, high=9), i64(3, 4)),
    case("rounding", lambda lib, x: (x.floor(), lib.ceil(x), x.trunc(), lib.round(x), x.frac()),
         f32(3, 4, low=-3, high=3)),
    case("round_half_even", lambda lib, x: (x + 0.5).round(), f32(3, 4, low=-4, high=4,
                                                                  integral=True)),
    case("round_decimals", lambda lib, x: x.round(decimals=1), f32(3, 4, low=-3, high=3)),
    case("floor_int", lambda lib, i: i.floor(), i64(3, 4)),
]

TRIANGLE_MASK = [
    case("triu", lambda lib, x: x.triu(), f32(3, 4)),
    case("triu_diag", lambda lib, x: (lib.triu(x, 1), lib.triu(x, -1)), f32(4, 3)),
    case("tril", lambda lib, x: x.tril(), f32(3, 4)),
    case("tril_diag", lambda lib, x: (lib.tril(x, diagonal=2), x.tril(-2)), f32(3, 4)),
    case("triu_batched", lambda lib, x: x.triu(1), f32(2, 3, 4)),
    case("tril_int", lambda lib, i: i.tril(), i64(3, 3)),
    case("tril_inplace", lambda lib, x: (x * 1).tril_(), f32(3, 3)),
    case("masked_fill", lambda lib, x, m: x.masked_fill(m, 0.5), f32(3, 4), boolean(3, 4)),
    case("masked_fill_broadcast", lambda lib, x, m: x.masked_fill(m, -1.0), f32(3, 4),
         boolean(4)),
    case("masked_fill_fn", lambda lib, x, m: lib.masked_fill(x, m, 2), f32(3, 4), boolean(3, 4)),
    case("masked_fill_tensor_value", lambda lib, x, m, v: x.masked_fill(m, v), f32(3, 4),
         boolean(3, 4), f32()),
    case("masked_fill_int", lambda lib, i, m: i.masked_fill(m, 2.7), i64(3, 4), boolean(3, 4)),
    case("masked_fill_inplace", lambda lib, x, m: (x * 1).masked_fill_(m, -2.0), f32(3, 4),
         boolean(3, 4)),
    case("masked_fill_causal_softmax", lambda lib, x: x.masked_fill(
        lib.ones(4, 4, dtype=lib.bool).triu(1), -INF).softmax(-1), f32(4, 4)),
]

LOGICAL = [
    case("all_any", lambda lib, b: (b.all(), b.any(), lib.all(b), lib.any(b)), boolean(3, 4)),
    case("all_any_dim", lambda lib, b: (b.all(1), b.any(0), b.all(-1, keepdim=True),
                                        lib.any(b, dim=0, keepdim=True)), boolean(3, 4)),
    case("all_any_float", lambda lib, x: (x.all(), x.any(1), x.all(0)),
         f32(3, 4, low=-1, high=1, integral=True)),
    case("all_any_int", lambda lib, i: (i.all(1), i.any(0)), i64(3, 4, low=-1, high=2)),
    case("all_any_tuple_dims", lambda lib, b: (b.all((0, 2)), b.any((1, 2), keepdim=True)),
         boolean(2, 3, 2)),
    case("all_any_empty", lambda lib, x: (x.all(1), x.any(1)), f32(2, 0)),
    case("all_nan_is_true", lambda lib, x: (x * NAN).all(), f32(3)),
]

SELECT = [
    case("where_python_ints", lambda lib, c: lib.where(c, 1, 0), boolean(3, 4)),
    case("where_tensor_int_scalar", lambda lib, c, x: lib.where(c, x, 2), boolean(3, 4),
         f32(3, 4)),
    case("where_method_scalar", lambda lib, c, x: x.where(c, 0.0), boolean(3, 4), f32(3, 4)),
    case("where_int_tensor_int_scalar", lambda lib, c, i: lib.where(c, 3, i), boolean(3, 4),
         i64(3, 4)),
    case("clamp_tensor_min", lambda lib, x, lo: x.clamp(min=lo), f32(3, 4), f32(3, 4)),
    case("clamp_tensor_max_broadcast", lambda lib, x, hi: lib.clamp(x, max=hi), f32(3, 4),
         f32(4)),
    case("clamp_min_max_methods", lambda lib, x: (x.clamp_min(0.2), x.clamp_max(-0.3)),
         f32(3, 4)),
]

SCANS = [
    case("cumsum", lambda lib, x: x.cumsum(1), f32(3, 5)),
    case("cumsum_dim0", lambda lib, x: lib.cumsum(x, 0), f32(5, 3)),
    case("cumsum_neg_dim_3d", lambda lib, x: x.cumsum(-2), f32(2, 7, 3)),
    case("cumsum_int", lambda lib, i: i.cumsum(0), i64(6, 2)),
    case("cumsum_bool", lambda lib, b: b.cumsum(1), boolean(2, 5)),
    case("cumsum_dtype", lambda lib, x: x.cumsum(1, dtype=lib.float64), f32(3, 4)),
    case("cumsum_0d", lambda lib, x: x.cumsum(0), f32()),
    case("cumprod", lambda lib, x: x.cumprod(1), f32(3, 5, low=0.5, high=1.5)),
    case("cumprod_signs", lambda lib, x: lib.cumprod(x, 0), f32(6, 2, away_from_zero=0.3)),
    case("cumprod_zeros", lambda lib, x: x.cumprod(-1), f32(3, 6, integral=True)),
    case("cumprod_int", lambda lib, i: i.cumprod(1), i64(2, 5, low=-3, high=4)),
]

REORDER = [
    case("flip", lambda lib, x: x.flip(0), f32(3, 4)),
    case("flip_two_dims", lambda lib, x: lib.flip(x, (0, 2)), f32(2, 3, 4)),
    case("flip_varargs_neg", lambda lib, x: x.flip(-1, 0), f32(3, 4)),
    case("flip_dims_kw", lambda lib, x: lib.flip(x, dims=[1]), f32(3, 4)),
    case("flip_int", lambda lib, i: i.flip(1), i64(3, 4)),
    case("fliplr_flipud", lambda lib, x: (lib.fliplr(x), x.flipud()), f32(3, 4)),
    case("roll", lambda lib, x: x.roll(1, 1), f32(3, 4)),
    case("roll_negative", lambda lib, x: lib.roll(x, -2, 0), f32(5, 2)),
    case("roll_multi", lambda lib, x: x.roll((1, 2), (0, -1)), f32(3, 4)),
    case("roll_flat", lambda lib, x: x.roll(5), f32(3, 4)),
    case("roll_past_size", lambda lib, x: x.roll(7, dims=1), f32(3, 4)),
    case("repeat_interleave", lambda lib, x: x.repeat_interleave(2, dim=0), f32(3, 4)),
    case("repeat_interleave_dim1", lambda lib, x: lib.repeat_interleave(x, 3, dim=-1),
         f32(2, 3)),
    case("repeat_interleave_flat", lambda lib, x: x.repeat_interleave(2), f32(2, 3)),
    case("repeat_interleave_tensor", lambda lib, x: x.repeat_interleave(
        lib.tensor([1, 0, 2]), dim=0), f32(3, 2)),
]

SORT = [
    case("sort", lambda lib, x: x.sort(), f32(3, 5)),
    case("sort_dim0_descending", lambda lib, x: lib.sort(x, 0, descending=True), f32(5, 3)),
    case("sort_stable_ties", lambda lib, x: x.sort(stable=True), f32(3, 6, integral=True)),
    case("sort_stable_ties_descending", lambda lib, x: lib.sort(x, dim=-1, descending=True,
                                                                 stable=True),
         f32(3, 6, integral=True)),
    case("sort_3d_mid", lambda lib, x: x.sort(1), f32(2, 4, 3)),
    case("sort_int", lambda lib, i: i.sort(stable=True), i64(3, 6)),
    case("sort_nan", lambda lib, x: (x + lib.tensor([0.0, NAN, 0.0, NAN])).sort(stable=True)[1],
         f32(2, 4)),
    case("argsort", lambda lib, x: (x.argsort(), lib.argsort(x, 0, descending=True)), f32(4, 3)),
    case("msort", lambda lib, x: lib.msort(x), f32(4, 3)),
    case("topk", lambda lib, x: x.topk(2), f32(3, 5)),
    case("topk_smallest_dim0", lambda lib, x: lib.topk(x, 3, dim=0, largest=False), f32(5, 2)),
]

LINALG = [
    case("einsum_matmul", lambda lib, a, b: lib.einsum("ij,jk->ik", a, b), f32(3, 4), f32(4, 2)),
    case("einsum_batched", lambda lib, a, b: lib.einsum("bij,bjk->bik", a, b), f32(2, 3, 4),
         f32(2, 4, 2)),
    case("einsum_attention", lambda lib, q, k: lib.einsum("bhqd,bhkd->bhqk", q, k),
         f32(2, 2, 3, 4), f32(2, 2, 5, 4)),
    case("einsum_diag_trace", lambda lib, a: (lib.einsum("ii->i", a), lib.einsum("ii", a)),
         f32(3, 3)),
    case("einsum_sum_transpose", lambda lib, a: (lib.einsum("ijk->", a), lib.einsum("ijk->kji", a)),
         f32(2, 3, 4)),
    case("einsum_outer_implicit", lambda lib, a, b: (lib.einsum("i,j->ij", a, b),
                                                     lib.einsum("j,i", a, b)), f32(3), f32(4)),
    case("einsum_ellipsis_broadcast", lambda lib, a, b: lib.einsum("...ij,jk->...ik", a, b),
         f32(2, 3, 4), f32(4, 2)),
    case("einsum_ellipsis_both", lambda lib, a, b: lib.einsum("...ij,...jk", a, b),
         f32(2, 3, 4), f32(1, 4, 2)),
    case("einsum_three", lambda lib, a, b, c: lib.einsum("ij,jk,kl->il", a, b, c),
         f32(2, 3), f32(3, 4), f32(4, 2)),
    case("einsum_list_operands", lambda lib, a, b: lib.einsum("ij,ij->i", [a, b]), f32(3, 4),
         f32(3, 4)),
    case("einsum_int", lambda lib, a, b: lib.einsum("ij,jk->ik", a, b), i64(2, 3), i64(3, 2)),
    case("addmm", lambda lib, c, a, b: lib.addmm(c, a, b), f32(3, 2), f32(3, 4), f32(4, 2)),
    case("addmm_scaled_broadcast", lambda lib, c, a, b: c.addmm(a, b, beta=0.5, alpha=2),
         f32(2), f32(3, 4), f32(4, 2)),
    case("addmm_beta_zero_nan", lambda lib, a, b: lib.addmm(lib.full((3, 2), NAN), a, b, beta=0),
         f32(3, 4), f32(4, 2)),
    case("baddbmm", lambda lib, c, a, b: lib.baddbmm(c, a, b, alpha=0.5), f32(2, 3, 2),
         f32(2, 3, 4), f32(2, 4, 2)),
    case("addmv", lambda lib, c, a, v: lib.addmv(c, a, v, beta=2), f32(3), f32(3, 4), f32(4)),
    case("outer_dot", lambda lib, a, b: (lib.outer(a, b), a.ger(b), lib.dot(a, a)), f32(3), f32(4)),
    case("norm", lambda lib, x: (x.norm(), lib.norm(x, dim=1), x.norm(p=1, dim=0, keepdim=True)),
         f32(3, 4)),
    case("norm_inf", lambda lib, x: (x.norm(p=INF, dim=1), lib.norm(x, -INF)),
         f32(3, 4, away_from_zero=0.1)),
    case("norm_p3_fro_dims", lambda lib, x: (x.norm(p=3, dim=-1), x.norm("fro", dim=(0, 2))),
         f32(2, 3, 4)),
    case("norm_zero_row", lambda lib, x: (x * lib.tensor([[1.0], [0.0], [1.0]])).norm(dim=1),
         f32(3, 4)),
    case("vector_norm", lambda lib, x: (lib.linalg.vector_norm(x), lib.linalg.vector_norm(
        x, ord=0, dim=1), lib.linalg.vector_norm(x, 2, dim=-1, keepdim=True)),
         f32(3, 4, integral=True)),
]

SPECIAL = [
    case("log1p", lambda lib, x: lib.log1p(x), f32(3, 4, low=-0.9, high=3)),
    case("log1p_tiny", lambda lib, x: (x * 1e-6).log1p(), f32(3, 4)),
    case("expm1", lambda lib, x: lib.expm1(x), f32(3, 4, low=-3, high=3)),
    case("expm1_tiny", lambda lib, x: (x * 1e-6).expm1(), f32(3, 4)),
    case("erf", lambda lib, x: (lib.erf(x), x.erf()), f32(3, 4, low=-3, high=3)),
    case("isnan_isinf_isfinite", lambda lib, x: (lambda y: (y.isnan(), lib.isinf(y), y.isfinite(),
                                                            lib.isposinf(y), lib.isneginf(y)))(
        lib.cat([x, lib.tensor([NAN, INF, -INF])])), f32(3)),
    case("isnan_int", lambda lib, i: (i.isnan(), lib.isfinite(i)), i64(3, 4)),
    case("nan_to_num", lambda lib, x: lib.nan_to_num(lib.cat([x, lib.tensor([NAN, INF, -INF])])),
         f32(3)),
    case("nan_to_num_values", lambda lib, x: lib.cat([x, lib.tensor([NAN, INF, -INF])])
         .nan_to_num(nan=1.0, posinf=2.0, neginf=-2.0), f32(3)),
]

CASES = DIVMOD + TRIANGLE_MASK + LOGICAL + SELECT + SCANS + REORDER + SORT + LINALG + SPECIAL


test_case_names_are_unique, test_op_matches_torch, test_numba_cpu_equals_interpreter = \
    parity_tests(CASES)
