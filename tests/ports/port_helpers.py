"""What every ported script shares: the same starting weights in both libraries, and the loss
comparison.

The two libraries' random generators differ, so weights come from numpy, seeded per parameter
name, and enter the model through ``load_state_dict`` as a torch user would load them.
"""
from __future__ import annotations

import zlib
from types import ModuleType
from typing import Any

import numpy as np

# Per-step losses of float32 training: rounding differences in reductions (different summation
# orders in the two libraries) grow a little with every step through the weights. Measured over
# these scripts (12-51 steps): at most 1.9e-7 relative; 1e-5 leaves room for other CPUs' SIMD.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-6


def numpy_weights(named_shapes: list[tuple[str, tuple[int, ...]]],
                  seed: int) -> dict[str, np.ndarray]:
    """Weights for each ``(name, shape)``: uniform in +-1/sqrt(fan_in) for matrices and kernels,
    1 + small noise for 1-D ``weight``s (norm scales), small noise for biases."""
    out = {}
    for name, shape in named_shapes:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if len(shape) >= 2:
            bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
            arr = rng.uniform(-bound, bound, shape)
        elif name.endswith("weight"):
            arr = 1.0 + rng.uniform(-0.1, 0.1, shape)
        else:
            arr = rng.uniform(-0.1, 0.1, shape)
        out[name] = arr.astype(np.float32)
    return out


def load_numpy_weights(torch: ModuleType, model: Any, seed: int) -> None:
    """Give ``model`` (a ``torch.nn.Module`` of either library) the weights of ``seed``, keeping
    its buffers (BatchNorm statistics) as constructed."""
    state = model.state_dict()
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    for name, arr in numpy_weights(shapes, seed).items():
        state[name] = torch.tensor(arr)
    model.load_state_dict(state)


def max_relative_deviation(got: list[float], want: list[float]) -> float:
    """The largest ``|got - want| / |want|`` over the steps."""
    g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(g - w) / np.maximum(np.abs(w), 1e-12)))


def assert_losses_match(got: list[float], want: list[float]) -> None:
    """Same number of steps, every loss within ``LOSS_RTOL`` of torch's."""
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, rtol=LOSS_RTOL, atol=LOSS_ATOL, err_msg=(
        f"largest relative deviation {max_relative_deviation(got, want):.2e}"))
