"""Every front-end op against PyTorch, forward and gradient, on every backend.

Each row is one :class:`parity.Case`: a function written once for both libraries (``lib`` is
``fusegrad`` or ``torch``) and its inputs. Shapes are tiny: each numba_cpu case compiles kernels.
"""
from __future__ import annotations

import pytest
import torch
from parity import boolean, case, f32, i64, parity_tests, pos

import fusegrad
import fusegrad.nnlib.functional

# ---------------------------------------------------------------------------- arithmetic
ARITHMETIC = [
    case("add", lambda lib, x, y: x + y, f32(3, 4), f32(3, 4)),
    case("add_fn_alpha", lambda lib, x, y: lib.add(x, y, alpha=2), f32(3, 4), f32(3, 4)),
    case("add_scalar_right", lambda lib, x: x + 2.5, f32(3, 4)),
    case("add_scalar_left", lambda lib, x: 2.5 + x, f32(3, 4)),
    case("sub", lambda lib, x, y: x - y, f32(3, 4), f32(3, 4)),
    case("sub_scalar_right", lambda lib, x: x - 1.5, f32(3, 4)),
    case("sub_scalar_left", lambda lib, x: 1.5 - x, f32(3, 4)),
    case("mul", lambda lib, x, y: x * y, f32(3, 4), f32(3, 4)),
    case("mul_scalar_right", lambda lib, x: x * 3, f32(3, 4)),
    case("mul_scalar_left", lambda lib, x: -0.5 * x, f32(3, 4)),
    case("mul_self", lambda lib, x: x * x, f32(3, 4)),
    case("div", lambda lib, x, y: x / y, f32(3, 4), f32(3, 4, away_from_zero=0.5)),
    case("div_scalar_right", lambda lib, x: x / 4, f32(3, 4)),
    case("div_scalar_left", lambda lib, x: 2 / x, f32(3, 4, away_from_zero=0.5)),
    case("pow", lambda lib, x, y: x ** y, pos(3, 4), f32(3, 4)),
    case("pow_int_scalar", lambda lib, x: x ** 3, f32(3, 4)),
    case("pow_float_scalar", lambda lib, x: x ** 0.5, pos(3, 4)),
    case("pow_negative_scalar", lambda lib, x: x ** -2.0, f32(3, 4, away_from_zero=0.5)),
    case("pow_scalar_base", lambda lib, x: 2 ** x, f32(3, 4)),
    case("pow_fn", lambda lib, x, y: lib.pow(x, y), pos(3, 4), f32(3, 4)),
    case("neg", lambda lib, x: -x, f32(3, 4)),
    case("neg_fn", lambda lib, x: lib.neg(x), f32(3, 4)),
    # type promotion: int tensors with float scalars / float tensors, 0-d operands
    case("int_add_float_scalar", lambda lib, i: i + 1.5, i64(3, 4)),
    case("int_mul_float_scalar", lambda lib, i: 0.5 * i, i64(3, 4)),
    case("int_sub_int_scalar", lambda lib, i: i - 2, i64(3, 4)),
    case("int_div_int_scalar", lambda lib, i: i / 2, i64(3, 4)),
    case("int_rdiv_float_scalar", lambda lib, i: 1.0 / i, i64(3, 4, low=1, high=5)),
    case("int_pow_float_scalar", lambda lib, i: i ** 2.0, i64(3, 4)),
    case("int_add_float_tensor", lambda lib, i, x: i + x, i64(3, 4), f32(3, 4)),
    case("float_mul_int_tensor", lambda lib, x, i: x * i, f32(3, 4), i64(3, 4)),
    case("int_div_int_tensor", lambda lib, i, j: i / j, i64(3, 4), i64(3, 4, low=1, high=4)),
    case("bool_add_int_scalar", lambda lib, b: b + 1, boolean(3, 4)),
    case("float_add_0d_float64", lambda lib, x: x + lib.tensor(2.0, dtype=lib.float64), f32(3, 4)),
    case("int_add_0d_float", lambda lib, i: i + lib.tensor(1.5), i64(3, 4)),
    case("float32_add_float64", lambda lib, x: x + x.double(), f32(3, 4)),
]

# ---------------------------------------------------------------------------- unary
UNARY = [
    case("abs", lambda lib, x: x.abs(), f32(3, 4, away_from_zero=0.1)),
    case("abs_operator", lambda lib, x: abs(x), f32(3, 4, away_from_zero=0.1)),
    case("abs_int", lambda lib, i: lib.abs(i), i64(3, 4)),
    case("neg_int", lambda lib, i: -i, i64(3, 4)),
    case("exp", lambda lib, x: lib.exp(x), f32(3, 4)),
    case("exp_int", lambda lib, i: lib.exp(i), i64(3, 4)),
    case("log", lambda lib, x: lib.log(x), pos(3, 4, low=0.1, high=3.0)),
    case("sqrt", lambda lib, x: x.sqrt(), pos(3, 4, low=0.1, high=3.0)),
    case("sin", lambda lib, x: lib.sin(x), f32(3, 4, low=-4, high=4)),
    case("cos", lambda lib, x: x.cos(), f32(3, 4, low=-4, high=4)),
    case("tanh", lambda lib, x: lib.tanh(x), f32(3, 4, low=-3, high=3)),
    case("sigmoid", lambda lib, x: lib.sigmoid(x), f32(3, 4, low=-6, high=6)),
    case("sigmoid_method", lambda lib, x: x.sigmoid(), f32(3, 4)),
    case("relu", lambda lib, x: lib.relu(x), f32(3, 4)),
    case("relu_method", lambda lib, x: x.relu(), f32(3, 4)),
    case("clamp_min", lambda lib, x: x.clamp(min=-0.5), f32(3, 4)),
    case("clamp_max", lambda lib, x: x.clamp(max=0.5), f32(3, 4)),
    case("clamp_both", lambda lib, x: lib.clamp(x, -0.5, 0.5), f32(3, 4)),
    case("clamp_int", lambda lib, i: i.clamp(-2, 3), i64(3, 4)),
]

# ---------------------------------------------------------------------------- binary selection
SELECT = [
    case("maximum", lambda lib, x, y: lib.maximum(x, y), f32(3, 4), f32(3, 4)),
    case("minimum", lambda lib, x, y: lib.minimum(x, y), f32(3, 4), f32(3, 4)),
    # whole numbers in [-2, 2]: many ties, where torch splits the gradient evenly
    case("maximum_ties", lambda lib, x, y: lib.maximum(x, y),
         f32(3, 4, integral=True), f32(3, 4, integral=True)),
    case("minimum_ties", lambda lib, x, y: lib.minimum(x, y),
         f32(3, 4, integral=True), f32(3, 4, integral=True)),
    case("maximum_broadcast", lambda lib, x, y: lib.maximum(x, y), f32(3, 4), f32(4)),
    case("max_binary", lambda lib, x, y: lib.max(x, y), f32(3, 4), f32(3, 4)),
    case("where", lambda lib, x, y: lib.where(x > 0, x, y), f32(3, 4), f32(3, 4)),
    case("where_scalar", lambda lib, x: lib.where(x > 0, x, 0.0), f32(3, 4)),
    case("where_bool_input", lambda lib, c, x, y: lib.where(c, x, y),
         boolean(3, 4), f32(3, 4), f32(3, 4)),
    case("where_broadcast", lambda lib, c, x, y: lib.where(c, x, y),
         boolean(3, 1), f32(3, 4), f32(4)),
    case("where_int", lambda lib, c, i, j: lib.where(c, i, j), boolean(3, 4), i64(3, 4), i64(3, 4)),
]

# ---------------------------------------------------------------------------- comparisons
_CMP = {"lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y,
        "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y}
COMPARE = [
    # whole-number floats so that == and the <= / >= edges actually occur
    *[case(f"cmp_{name}", lambda lib, x, y, f=f: f(x, y),
           f32(3, 4, integral=True), f32(3, 4, integral=True)) for name, f in _CMP.items()],
    *[case(f"cmp_{name}_scalar", lambda lib, x, f=f: f(x, 1.0), f32(3, 4, integral=True))
      for name, f in _CMP.items()],
    *[case(f"cmp_{name}_scalar_left", lambda lib, x, f=f: f(0.0, x), f32(3, 4, integral=True))
      for name, f in _CMP.items()],
    case("cmp_lt_int_float_scalar", lambda lib, i: i < 0.5, i64(3, 4)),
    case("cmp_eq_broadcast", lambda lib, x, y: x == y,
         f32(3, 4, integral=True), f32(4, integral=True)),
    case("cmp_fn_ge", lambda lib, x, y: lib.ge(x, y), f32(3, 4), f32(3, 4)),
]

# ---------------------------------------------------------------------------- reductions
REDUCE = [
    case("sum_all", lambda lib, x: x.sum(), f32(3, 4)),
    case("sum_dim", lambda lib, x: x.sum(1), f32(3, 4)),
    case("sum_dim_keepdim", lambda lib, x: x.sum(1, keepdim=True), f32(3, 4)),
    case("sum_neg_dim", lambda lib, x: lib.sum(x, -1), f32(2, 3, 4)),
    case("sum_tuple", lambda lib, x: x.sum((0, 2)), f32(2, 3, 4)),
    case("sum_tuple_keepdim", lambda lib, x: x.sum((0, -1), keepdim=True), f32(2, 3, 4)),
    case("sum_dim_none", lambda lib, x: x.sum(dim=None), f32(3, 4)),
    case("sum_int", lambda lib, i: i.sum(0), i64(3, 4)),
    case("sum_bool", lambda lib, b: b.sum(), boolean(3, 4)),
    case("mean_all", lambda lib, x: x.mean(), f32(3, 4)),
    case("mean_dim", lambda lib, x: lib.mean(x, 0), f32(3, 4)),
    case("mean_neg_dim_keepdim", lambda lib, x: x.mean(-1, keepdim=True), f32(2, 3, 4)),
    case("mean_tuple", lambda lib, x: x.mean((0, 1)), f32(2, 3, 4)),
    case("max_all", lambda lib, x: x.max(), f32(3, 4)),
    case("max_all_ties", lambda lib, x: x.max(), f32(3, 4, integral=True)),
    case("max_dim", lambda lib, x: x.max(1), f32(3, 4)),
    case("max_dim_keepdim", lambda lib, x: lib.max(x, -1, keepdim=True), f32(2, 3, 4)),
    case("min_all", lambda lib, x: x.min(), f32(3, 4)),
    case("min_all_ties", lambda lib, x: lib.min(x), f32(3, 4, integral=True)),
    case("min_dim", lambda lib, x: x.min(0), f32(3, 4)),
    case("min_dim_keepdim", lambda lib, x: x.min(dim=1, keepdim=True), f32(3, 4)),
    case("amax_tuple", lambda lib, x: lib.amax(x, (0, 2)), f32(2, 3, 4)),
    case("amin_dim", lambda lib, x: x.amin(-1), f32(3, 4)),
    case("argmax_all", lambda lib, x: x.argmax(), f32(3, 4)),
    case("argmax_dim", lambda lib, x: lib.argmax(x, 1), f32(3, 4)),
    case("argmax_neg_dim_keepdim", lambda lib, x: x.argmax(-1, keepdim=True), f32(2, 3, 4)),
    case("argmax_ties_first", lambda lib, x: x.argmax(0), f32(3, 4, integral=True)),
    case("argmax_int", lambda lib, i: i.argmax(1), i64(3, 4)),
    case("argmin_dim", lambda lib, x: x.argmin(1), f32(3, 4)),
    case("var_all", lambda lib, x: x.var(), f32(3, 4)),
    case("var_dim", lambda lib, x: x.var(1), f32(3, 4)),
    case("var_tuple_keepdim", lambda lib, x: x.var((0, 2), keepdim=True), f32(2, 3, 4)),
    case("var_biased", lambda lib, x: lib.var(x, -1, unbiased=False), f32(3, 4)),
    case("var_correction", lambda lib, x: x.var(0, correction=0), f32(3, 4)),
    case("std_all", lambda lib, x: x.std(), f32(3, 4)),
    case("std_dim", lambda lib, x: lib.std(x, 0), f32(3, 4)),
    case("std_neg_dim_keepdim", lambda lib, x: x.std(-1, keepdim=True), f32(2, 3, 4)),
    case("std_biased", lambda lib, x: x.std(1, unbiased=False), f32(3, 4)),
]

# ---------------------------------------------------------------------------- linear algebra
MATMUL = [
    case("matmul_1d_1d", lambda lib, a, b: a @ b, f32(4), f32(4)),
    case("matmul_2d", lambda lib, a, b: a @ b, f32(3, 4), f32(4, 5)),
    case("matmul_1d_2d", lambda lib, a, b: a @ b, f32(4), f32(4, 5)),
    case("matmul_2d_1d", lambda lib, a, b: lib.matmul(a, b), f32(3, 4), f32(4)),
    case("matmul_3d", lambda lib, a, b: a @ b, f32(2, 3, 4), f32(2, 4, 5)),
    case("matmul_3d_2d", lambda lib, a, b: a @ b, f32(2, 3, 4), f32(4, 5)),
    case("matmul_2d_3d", lambda lib, a, b: a @ b, f32(3, 4), f32(2, 4, 5)),
    case("matmul_1d_3d", lambda lib, a, b: a @ b, f32(4), f32(2, 4, 5)),
    case("matmul_3d_1d", lambda lib, a, b: a @ b, f32(2, 3, 4), f32(4)),
    case("matmul_broadcast_batch", lambda lib, a, b: a @ b, f32(2, 1, 3, 4), f32(3, 4, 5)),
    case("matmul_transposed_operand", lambda lib, a, b: a @ b.T, f32(3, 4), f32(5, 4)),
    case("mm", lambda lib, a, b: lib.mm(a, b), f32(3, 4), f32(4, 5)),
    case("mm_method", lambda lib, a, b: a.mm(b), f32(3, 4), f32(4, 2)),
    case("bmm", lambda lib, a, b: lib.bmm(a, b), f32(2, 3, 4), f32(2, 4, 5)),
]

# ---------------------------------------------------------------------------- movement
MOVEMENT = [
    case("reshape", lambda lib, x: x.reshape(4, 3), f32(3, 4)),
    case("reshape_tuple", lambda lib, x: lib.reshape(x, (2, 6)), f32(3, 4)),
    case("reshape_infer", lambda lib, x: x.reshape(2, -1, 2), f32(3, 4)),
    case("view_flat", lambda lib, x: x.view(-1), f32(3, 4)),
    case("view_infer", lambda lib, x: x.view(-1, 6), f32(2, 3, 2)),
    case("reshape_scalar", lambda lib, x: x.reshape(()), f32(1, 1)),
    case("permute", lambda lib, x: x.permute(2, 0, 1), f32(2, 3, 4)),
    case("permute_neg_tuple", lambda lib, x: lib.permute(x, (-1, 0, 1)), f32(2, 3, 4)),
    case("transpose", lambda lib, x: x.transpose(0, 1), f32(3, 4)),
    case("transpose_neg", lambda lib, x: lib.transpose(x, -1, -3), f32(2, 3, 4)),
    case("T", lambda lib, x: x.T, f32(3, 4)),
    case("T_then_mul", lambda lib, x, y: x.T * y, f32(3, 4), f32(4, 3)),
    case("unsqueeze_0", lambda lib, x: x.unsqueeze(0), f32(3, 4)),
    case("unsqueeze_neg", lambda lib, x: lib.unsqueeze(x, -1), f32(3, 4)),
    case("unsqueeze_mid", lambda lib, x: x.unsqueeze(1), f32(3, 4)),
    case("squeeze_all", lambda lib, x: x.squeeze(), f32(3, 1, 4, 1)),
    case("squeeze_dim", lambda lib, x: x.squeeze(1), f32(3, 1, 4, 1)),
    case("squeeze_neg_dim", lambda lib, x: lib.squeeze(x, -1), f32(3, 1, 4, 1)),
    case("squeeze_not_one", lambda lib, x: x.squeeze(0), f32(3, 1, 4)),
    case("flatten", lambda lib, x: x.flatten(), f32(2, 3, 4)),
    case("flatten_start", lambda lib, x: lib.flatten(x, 1), f32(2, 3, 4)),
    case("flatten_range", lambda lib, x: x.flatten(0, 1), f32(2, 3, 4)),
    case("expand", lambda lib, x: x.expand(3, 4), f32(3, 1)),
    case("expand_new_dims", lambda lib, x: x.expand(2, -1, 4), f32(3, 1)),
    case("expand_then_mul", lambda lib, x, y: x.expand(3, 4) * y, f32(1, 4), f32(3, 4)),
    case("contiguous", lambda lib, x: x.T.contiguous(), f32(3, 4)),
    case("cat_dim0", lambda lib, x, y: lib.cat([x, y]), f32(3, 4), f32(2, 4)),
    case("cat_dim1", lambda lib, x, y, z: lib.cat([x, y, z], 1), f32(3, 4), f32(3, 1), f32(3, 2)),
    case("cat_neg_dim", lambda lib, x, y: lib.cat((x, y), dim=-1), f32(2, 3, 2), f32(2, 3, 4)),
    case("cat_same_tensor", lambda lib, x: lib.cat([x, x * 2], 0), f32(3, 4)),
    case("stack_dim0", lambda lib, x, y: lib.stack([x, y]), f32(3, 4), f32(3, 4)),
    case("stack_dim1", lambda lib, x, y, z: lib.stack([x, y, z], 1), f32(3, 4), f32(3, 4), f32(3, 4)),
    case("stack_neg_dim", lambda lib, x, y: lib.stack((x, y), dim=-1), f32(3, 4), f32(3, 4)),
    case("split_size", lambda lib, x: x.split(2), f32(5, 3)),
    case("split_sections", lambda lib, x: lib.split(x, [1, 3, 1]), f32(5, 3)),
    case("split_dim1", lambda lib, x: x.split(2, dim=1), f32(3, 5)),
    case("split_neg_dim", lambda lib, x: lib.split(x, [1, 2], -1), f32(4, 3)),
    case("chunk", lambda lib, x: x.chunk(2), f32(5, 3)),
    case("chunk_dim1", lambda lib, x: lib.chunk(x, 3, 1), f32(3, 7)),
    case("chunk_even", lambda lib, x: x.chunk(2, dim=-1), f32(3, 4)),
]

# ---------------------------------------------------------------------------- indexing
INDEX = [
    case("index_int", lambda lib, x: x[1], f32(3, 4)),
    case("index_neg_int", lambda lib, x: x[-1], f32(3, 4)),
    case("index_two_ints", lambda lib, x: x[1, -2], f32(3, 4)),
    case("index_slice", lambda lib, x: x[1:3], f32(4, 3)),
    case("index_slice_col", lambda lib, x: x[:, 1], f32(3, 4)),
    case("index_step", lambda lib, x: x[::2], f32(5, 3)),
    case("index_start_step", lambda lib, x: x[1::2, ::3], f32(5, 7)),
    case("index_neg_bounds", lambda lib, x: x[-3:-1], f32(5, 3)),
    case("index_neg_mixed", lambda lib, x: x[:-1, -2:], f32(3, 4)),
    case("index_neg_step_bounds", lambda lib, x: x[-4::2, 1:-1:2], f32(5, 6)),
    case("index_empty_slice", lambda lib, x: x[3:1], f32(4, 3)),
    case("index_none", lambda lib, x: x[None], f32(3, 4)),
    case("index_none_mid", lambda lib, x: x[:, None], f32(3, 4)),
    case("index_none_end", lambda lib, x: x[..., None], f32(3, 4)),
    case("index_ellipsis_int", lambda lib, x: x[..., 1], f32(2, 3, 4)),
    case("index_int_ellipsis_int", lambda lib, x: x[1, ..., 2], f32(2, 3, 4)),
    case("index_mixed_basic", lambda lib, x: x[None, 1, ::2, None, -1], f32(2, 3, 4)),
    case("index_tensor", lambda lib, x: x[lib.tensor([0, 2, 2])], f32(3, 4)),
    case("index_tensor_neg", lambda lib, x: x[lib.tensor([-1, 0])], f32(3, 4)),
    case("index_tensor_col", lambda lib, x: x[:, lib.tensor([1, 3, -1])], f32(3, 4)),
    case("index_tensor_2d", lambda lib, x: x[lib.tensor([[0, 1], [2, 0]])], f32(3, 4)),
    case("index_list", lambda lib, x: x[[0, 2]], f32(3, 4)),
    case("index_two_tensors", lambda lib, x: x[lib.tensor([0, 2, 1]), lib.tensor([1, 3, 1])],
         f32(3, 4)),
    case("index_two_tensors_neg", lambda lib, x: x[lib.tensor([-1, 0]), lib.tensor([2, -4])],
         f32(3, 4)),
    case("index_two_tensors_broadcast",
         lambda lib, x: x[lib.tensor([[0], [2]]), lib.tensor([1, 3, 0])], f32(3, 4)),
    case("index_two_tensors_trailing",
         lambda lib, x: x[:, lib.tensor([0, 2]), lib.tensor([1, -1])], f32(2, 3, 4)),
    case("index_int_and_tensor", lambda lib, x: x[1, lib.tensor([0, 2])], f32(3, 4)),
    case("index_tensor_then_int", lambda lib, x: x[:, lib.tensor([2, 0]), 1], f32(2, 3, 4)),
]

# ---------------------------------------------------------------------------- softmax
SOFTMAX = [
    case("softmax", lambda lib, x: lib.softmax(x, -1), f32(3, 4)),
    case("softmax_dim0", lambda lib, x: x.softmax(0), f32(3, 4)),
    case("softmax_3d", lambda lib, x: lib.softmax(x, dim=1), f32(2, 3, 4)),
    case("softmax_large", lambda lib, x: lib.softmax(x, -1), f32(3, 4, low=-30, high=30)),
    case("log_softmax", lambda lib, x: lib.log_softmax(x, -1), f32(3, 4)),
    case("log_softmax_dim0", lambda lib, x: x.log_softmax(0), f32(3, 4)),
    case("log_softmax_3d", lambda lib, x: lib.log_softmax(x, 1), f32(2, 3, 4)),
    case("log_softmax_large", lambda lib, x: x.log_softmax(-1), f32(3, 4, low=-30, high=30)),
]

# ---------------------------------------------------------------------------- broadcasting
BROADCAST = [
    case("bcast_row", lambda lib, x, y: x + y, f32(3, 4), f32(4)),
    case("bcast_rank3_col", lambda lib, x, y: x * y, f32(2, 3, 4), f32(3, 1)),
    case("bcast_outer", lambda lib, x, y: x - y, f32(3, 1), f32(1, 4)),
    case("bcast_lower_rank_left", lambda lib, x, y: x / y, f32(4), pos(2, 3, 4)),
    case("bcast_0d", lambda lib, x, y: x * y, f32(), f32(3, 4)),
    case("bcast_pow", lambda lib, x, y: x ** y, pos(2, 1, 4), f32(3, 1)),
    case("bcast_chain", lambda lib, x, y, z: (x + y) * z, f32(3, 1), f32(4), f32(2, 1, 1)),
]

# ---------------------------------------------------------------------------- edge cases
EDGE = [
    case("scalar_tensor_ops", lambda lib, x, y: (x * y + x.exp()) / y, f32(), pos()),
    case("sum_0d", lambda lib, x: x.sum(), f32()),
    case("mean_0d_dim", lambda lib, x: x.mean(0), f32()),
    case("max_0d", lambda lib, x: x.max(), f32()),
    case("softmax_0d", lambda lib, x: x.softmax(0), f32()),
    case("log_softmax_0d", lambda lib, x: lib.log_softmax(x, -1), f32()),
    case("unsqueeze_0d", lambda lib, x: x.unsqueeze(-1), f32()),
    case("flatten_0d", lambda lib, x: x.flatten(), f32()),
    case("index_none_0d", lambda lib, x: x[None, ...], f32()),
    case("index_true", lambda lib, x: x[True] * 2, f32(3, 4)),
    case("index_false", lambda lib, x: x[False], f32(3, 4)),
    case("index_bool_int_none", lambda lib, x: x[True, 1, None, ...], f32(3, 4)),
    case("index_two_bools", lambda lib, x: x[True, False], f32(3, 4)),
    case("index_bool_with_tensor", lambda lib, x: x[lib.tensor([1, 2]), True], f32(3, 4)),
    case("index_true_0d", lambda lib, x: x[True], f32()),
    case("softmax_empty_dim", lambda lib, x: x.softmax(1), f32(2, 0)),
    case("softmax_empty_other_dim", lambda lib, x: lib.softmax(x, 1), f32(0, 3)),
    case("log_softmax_empty_dim", lambda lib, x: x.log_softmax(-1), f32(2, 0)),
    case("logsumexp_empty_dim", lambda lib, x: lib.logsumexp(x, 1), f32(2, 0)),
    case("logsumexp_empty_all", lambda lib, x: x.logsumexp((0, 1), keepdim=True), f32(0, 3)),
    case("logsumexp_empty_kept", lambda lib, x: lib.logsumexp(x, 1), f32(0, 3)),
    case("squeeze_tuple", lambda lib, x: x.squeeze((1, 3)), f32(3, 1, 4, 1)),
    case("sum_keepdim_none", lambda lib, x: x.sum(dim=None, keepdim=True), f32(3, 4)),
    case("var_keepdim_none", lambda lib, x: x.var(dim=None, keepdim=True), f32(3, 4)),
    case("sum_dtype", lambda lib, x: x.sum(1, dtype=lib.float64), f32(3, 4)),
    case("argmax_keepdim_none", lambda lib, x: x.argmax(keepdim=True), f32(3, 4)),
    case("max_dim_ties", lambda lib, x: x.max(1), f32(3, 4, integral=True)),
    case("min_dim_ties", lambda lib, x: x.min(1), f32(3, 4, integral=True)),
    case("max_int_dim", lambda lib, i: i.max(0), i64(3, 4)),
    case("pow_zero_base", lambda lib, x: x ** 2.0, f32(3, 4, integral=True)),
    case("pow_zero_base_tensor_exp", lambda lib, x, y: x ** y,
         f32(3, 4, low=0, high=1.5, integral=True), pos(3, 4)),
    case("pow_zero_exponent", lambda lib, x: x ** 0, f32(3, 4)),
    case("clamp_tensor_bounds", lambda lib, x, lo: x.clamp(min=lo, max=lo + 1), f32(3, 4), f32(4)),
    case("clamp_int_float_bound", lambda lib, i: lib.clamp(i, min=0.5), i64(3, 4)),
    case("clamp_min_above_max", lambda lib, x: x.clamp(0.5, -0.5), f32(3, 4)),
    case("relu_int", lambda lib, i: lib.relu(i), i64(3, 4)),
    case("sigmoid_int", lambda lib, i: lib.sigmoid(i), i64(3, 4)),
    case("where_int_float_scalar", lambda lib, c, i: lib.where(c, i, 0.5), boolean(3, 4), i64(3, 4)),
    case("where_two_scalars", lambda lib, c: lib.where(c, 1.0, 0.0), boolean(3, 4)),
    case("where_scalar_left", lambda lib, x: lib.where(x < 0, 1.0, x), f32(3, 4)),
    case("where_mixed_float_dtypes", lambda lib, c, x, y: lib.where(c, x.double(), y),
         boolean(3, 4), f32(3, 4), f32(3, 4)),
    case("cmp_int_float_tensor", lambda lib, i, x: i < x, i64(3, 4, low=-2, high=2), f32(3, 4)),
    case("cmp_float_int_scalar", lambda lib, x: x == 1, f32(3, 4, integral=True)),
    case("cat_promotes", lambda lib, i, x: lib.cat([i, x], 1), i64(3, 2), f32(3, 4)),
    case("cat_single", lambda lib, x: lib.cat([x], 0), f32(3, 4)),
    case("stack_0d", lambda lib, x, y: lib.stack([x, y]), f32(), f32()),
    case("stack_last_dim", lambda lib, x, y: lib.stack([x, y], 2), f32(3, 4), f32(3, 4)),
    case("split_larger_than_dim", lambda lib, x: x.split(5), f32(3, 4)),
    case("split_with_empty", lambda lib, x: x.split([0, 3]), f32(3, 4)),
    case("chunk_uneven", lambda lib, x: x.chunk(4), f32(5, 2)),
    case("expand_minus_one", lambda lib, x: x.expand(-1, 4), f32(3, 1)),
    case("mT", lambda lib, x: x.mT, f32(2, 3, 4)),
    case("reshape_permuted", lambda lib, x: x.permute(1, 0).reshape(-1), f32(3, 4)),
    case("index_step_past_end", lambda lib, x: x[::5], f32(3, 4)),
    case("index_slice_out_of_range", lambda lib, x: x[-10:10, 5:], f32(3, 4)),
    case("index_ellipsis_step", lambda lib, x: x[..., ::2], f32(2, 3, 4)),
    case("index_none_then_int", lambda lib, x: x[:, :, None, 1], f32(2, 3, 4)),
    case("index_0d_tensor", lambda lib, x: x[lib.tensor(1)], f32(3, 4)),
    case("index_int32_tensor", lambda lib, x: x[lib.tensor([2, 0], dtype=lib.int32)], f32(3, 4)),
    case("index_computed_tensor", lambda lib, x: x[lib.tensor([-2, 0]) + 1], f32(3, 4)),
    case("index_int_input", lambda lib, i: i[lib.tensor([1, 0]), 1:], i64(3, 4)),
    case("index_1d", lambda lib, x: x[1:3], f32(5)),
    case("log_softmax_neg_inf", lambda lib, x: (x + lib.tensor([0.0, -float("inf"), 0.0, 0.0]))
         .log_softmax(-1)[:, ::2], f32(3, 4)),
    case("mlp_like", lambda lib, x, w, b: (x @ w + b).relu().log_softmax(-1),
         f32(3, 4), f32(4, 5), f32(5)),
    case("normalize", lambda lib, x: (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-5),
         f32(3, 4)),
    case("shared_subexpression", lambda lib, x: (x.exp() * x.exp().sum(0)).sum(1), f32(3, 4)),
]

# ---------------------------------------------------------------------------- other public ops
def _functional(lib):
    """``torch.nn.functional`` or fusegrad's counterpart."""
    return torch.nn.functional if lib is torch else fusegrad.nnlib.functional


OTHER = [
    case("square", lambda lib, x: lib.square(x), f32(3, 4)),
    case("rsqrt", lambda lib, x: lib.rsqrt(x), pos(3, 4)),
    case("reciprocal", lambda lib, x: x.reciprocal(), f32(3, 4, away_from_zero=0.5)),
    case("sign", lambda lib, x: lib.sign(x), f32(3, 4, integral=True)),
    case("sign_int", lambda lib, i: i.sign(), i64(3, 4)),
    case("clip", lambda lib, x: lib.clip(x, -1, 1), f32(3, 4)),
    case("logical_ops", lambda lib, a, b: (lib.logical_and(a, b), lib.logical_or(a, b),
                                           lib.logical_not(a), a & b, a | b, ~a),
         boolean(3, 4), boolean(3, 4)),
    case("logsumexp", lambda lib, x: lib.logsumexp(x, 1), f32(3, 4, low=-20, high=20)),
    case("logsumexp_keepdim", lambda lib, x: x.logsumexp((0, 2), keepdim=True), f32(2, 3, 4)),
    case("gather", lambda lib, x: lib.gather(x, 1, lib.tensor([[0, 0], [3, 1], [2, 2]])), f32(3, 4)),
    case("gather_dim0", lambda lib, x: x.gather(0, lib.tensor([[2, 0, 1, 1]])), f32(3, 4)),
    case("take_along_dim", lambda lib, x: lib.take_along_dim(x, x.argmax(1, keepdim=True), 1),
         f32(3, 4)),
    case("index_select", lambda lib, x: lib.index_select(x, 1, lib.tensor([3, 0, 3])), f32(3, 4)),
    case("narrow", lambda lib, x: lib.narrow(x, 1, 1, 2), f32(3, 4)),
    case("unbind", lambda lib, x: lib.unbind(x, 1), f32(3, 4)),
    case("repeat", lambda lib, x: x.repeat(2, 1, 3), f32(3, 2)),
    case("unflatten", lambda lib, x: x.unflatten(1, (2, 2)), f32(3, 4)),
    case("broadcast_to", lambda lib, x: lib.broadcast_to(x, (2, 3, 4)), f32(4)),
    case("expand_as", lambda lib, x, y: x.expand_as(y) * y, f32(3, 1), f32(3, 4)),
    case("view_as", lambda lib, x, y: x.view_as(y) + y, f32(3, 4), f32(4, 3)),
    case("clone", lambda lib, x: x.clone() * 2, f32(3, 4)),
    case("one_hot", lambda lib, i: _functional(lib).one_hot(i, 5), i64(3, 4, low=0, high=5)),
    case("to_dtype", lambda lib, x: (x.to(lib.float64), x.long(), x.int(), x.bool(), x.float()),
         f32(3, 4, integral=True)),
    case("amax_ties", lambda lib, x: x.amax(1), f32(3, 4, integral=True)),
    case("amin_ties", lambda lib, x: lib.amin(x, 0), f32(3, 4, integral=True)),
]

CASES = ARITHMETIC + UNARY + SELECT + COMPARE + REDUCE + MATMUL + MOVEMENT + INDEX + SOFTMAX + \
    BROADCAST + EDGE + OTHER


test_case_names_are_unique, test_op_matches_torch, test_numba_cpu_equals_interpreter = \
    parity_tests(CASES)
