"""Running a parity case (tests/parity.py) on a device: the CUDA tests compare the GPU's
outputs and gradients with the CPU backend's, case by case."""
from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import numpy as np
from parity import Case, _compare, _dtype_name, _outputs, using_backend

import fusegrad

TESTS = Path(__file__).resolve().parent.parent


def load_cases(relative: str) -> list[Case]:
    """The ``CASES`` table of a test module, read without collecting its tests again."""
    path = TESTS / relative
    spec = importlib.util.spec_from_file_location(f"_cuda_cases_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return list(module.CASES)


class OnDevice:
    """``fusegrad`` as a case sees it, with ``tensor(...)`` made on ``device`` (as a torch user
    writes ``torch.tensor(..., device=x.device)`` for tensors that meet ``x``)."""

    def __init__(self, device: str):
        self._device = device

    def __getattr__(self, name: str):
        return getattr(fusegrad, name)

    def tensor(self, data, dtype=None, device=None, requires_grad=False):
        return fusegrad.tensor(data, dtype=dtype, device=device or self._device,
                               requires_grad=requires_grad)


def run_on(c: Case, device: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Outputs and input gradients (of ``sum(out * r)``) of case ``c`` with its inputs on
    ``device`` (numba_cpu for the host), as host arrays."""
    rng = np.random.default_rng(zlib.crc32(c.name.encode()))
    arrays = [inp.draw(rng) for inp in c.inputs]
    with using_backend("numba_cpu"):
        inputs = [fusegrad.tensor(a, device=device).requires_grad_(a.dtype.kind == "f")
                  for a in arrays]
        out = _outputs(c.fn(OnDevice(device), *inputs))
        assert all(o.device == fusegrad.device(device) for o in out), \
            f"outputs on {[str(o.device) for o in out]}, inputs on {device}"
        values = [o.detach().cpu().numpy().copy() for o in out]
        loss = None
        for o in out:
            if o.requires_grad:
                r = rng.standard_normal(tuple(o.shape)).astype(_dtype_name(o))
                term = (o * fusegrad.tensor(r, device=device)).sum()
                loss = term if loss is None else loss + term
        if loss is None:
            return values, []
        loss.backward()
        return values, [None if t.grad is None else t.grad.cpu().numpy().copy() for t in inputs]


def check_gpu_equals_cpu(c: Case) -> None:
    """The GPU gives the CPU backend's outputs and gradients (dtypes, shapes; values within the
    case's tolerances: sums add in another order on the GPU)."""
    ref_values, ref_grads = run_on(c, "cpu")
    values, grads = run_on(c, "cuda")
    assert len(values) == len(ref_values)
    for i, (got, want) in enumerate(zip(values, ref_values)):
        assert got.dtype == want.dtype, f"output {i}: dtype {got.dtype} != {want.dtype}"
        _compare(f"output {i} on the GPU vs the CPU", got, want, c)
    assert len(grads) == len(ref_grads)
    for i, (got, want) in enumerate(zip(grads, ref_grads)):
        assert (got is None) == (want is None), f"input {i}: gradient presence differs"
        if got is not None:
            _compare(f"grad of input {i} on the GPU vs the CPU", got, want, c)
