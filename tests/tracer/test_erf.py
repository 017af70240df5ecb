"""``erf``, an elementwise primitive of the op table: ``fusegrad.erf``, ``Tensor.erf`` and
``Tensor.erf_`` against torch (values and gradients, float32 and float64, both backends).

Its VJP against finite differences in float64 is in tests/ir/test_autodiff_fd.py.
"""
from __future__ import annotations

import numpy as np
import torch
from parity import Input, case, f32, i64, parity_tests

import fusegrad


def f64(*shape: int, low: float = -3.0, high: float = 3.0) -> Input:
    return Input(tuple(shape), "float64", low, high)


CASES = [
    case("erf_f32", lambda lib, x: (lib.erf(x), x.erf()), f32(4, 5, low=-3, high=3)),
    case("erf_f64", lambda lib, x: (lib.erf(x), x.erf()), f64(4, 5), rtol=1e-12, atol=1e-14),
    case("erf_tails_f64", lambda lib, x: lib.erf(x * 4.0), f64(3, 4), rtol=1e-12, atol=1e-14),
    case("erf_tiny_f32", lambda lib, x: lib.erf(x * 1e-6), f32(3, 4), atol=1e-12),
    case("erf_inplace", lambda lib, x: (x * 1.0).erf_(), f32(3, 4)),
    case("erf_of_integers", lambda lib, i: lib.erf(i), i64(3, 4)),
    case("erf_in_a_chain", lambda lib, x: (lib.erf(x * 0.7) * x).sum(1), f64(3, 4),
         rtol=1e-12, atol=1e-14),
    case("gelu_exact", lambda lib, x: lib.nn.functional.gelu(x), f32(3, 4, low=-4, high=4)),
]

test_names_are_unique, test_matches_torch, test_numba_cpu_equals_interpreter = \
    parity_tests(CASES)


def test_erf_of_special_values_matches_torch():
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 30.0], np.float32)
    got = fusegrad.erf(fusegrad.tensor(values)).numpy()
    want = torch.erf(torch.tensor(values)).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
