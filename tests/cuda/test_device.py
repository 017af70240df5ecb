"""Device semantics as torch users expect them: fusegrad.cuda, moves, refusals, mixed devices,
modules and optimizers on the GPU, checkpoints of GPU tensors."""
from __future__ import annotations

import io

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nn as nn
from fusegrad.errors import CaptureError, DeviceError


def test_cuda_is_available_with_one_device():
    assert fg.cuda.is_available() and fg.cuda.device_count() == 1
    assert fg.cuda.unavailable_reason() == ""
    assert fg.cuda.current_device() == 0


def test_creation_and_moves_keep_values():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = fg.tensor(a, device="cuda")
    assert x.device == fg.device("cuda", 0) and x.is_cuda and str(x.device) == "cuda:0"
    back = x.cpu()
    assert back.device == fg.device("cpu") and not back.is_cuda
    np.testing.assert_array_equal(back.numpy(), a)
    assert x.cuda() is x and back.cpu() is back and x.to("cuda:0") is x
    assert fg.zeros(2, 3, device="cuda").is_cuda
    assert fg.zeros_like(x).is_cuda and fg.ones_like(back).device == fg.device("cpu")
    y = fg.tensor(a).to(fg.device("cuda"), fg.float64)
    assert y.is_cuda and y.dtype == fg.float64
    assert "device='cuda:0'" in repr(x)


def test_numpy_refuses_a_gpu_tensor_with_torchs_message():
    x = fg.ones(3, device="cuda") * 2
    with pytest.raises(TypeError) as err:
        x.numpy()
    assert str(err.value) == ("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() "
                              "to copy the tensor to host memory first.")
    with pytest.raises(TypeError, match="can't convert cuda:0"):
        np.asarray(x)
    assert x.sum().item() == 6.0 and x.tolist() == [2.0, 2.0, 2.0]


def test_an_op_mixing_devices_names_both_and_the_line():
    x = fg.tensor([1.0, 2.0], device="cuda")
    y = fg.tensor([3.0, 4.0])
    with pytest.raises(DeviceError) as err:
        x + y  # the line the error names
    message = str(err.value)
    assert "Expected all tensors to be on the same device, but found at least two devices, " \
        "cuda:0 and cpu!" in message
    assert f"test_device.py:{test_an_op_mixing_devices_names_both_and_the_line.__code__.co_firstlineno + 4}" \
        in message
    assert isinstance(err.value, RuntimeError)
    # a 0-d CPU tensor and Python scalars meet any device, as in torch
    np.testing.assert_allclose((x * fg.tensor(3.0) + 1).cpu().numpy(), [4.0, 7.0])


def test_moving_a_tensor_that_requires_grad_is_refused():
    w = fg.ones(2, requires_grad=True)
    with pytest.raises(DeviceError, match="not differentiable"):
        w.cuda()
    assert w.detach().cuda().is_cuda


def test_module_to_moves_parameters_buffers_and_grads_in_place():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    weight = model[0].weight
    model(fg.randn(5, 3)).sum().backward()
    assert model.to("cuda") is model and model[0].weight is weight
    assert all(p.is_cuda and p.grad.is_cuda for p in model.parameters())
    assert all(b.is_cuda for b in model.buffers())
    out = model(fg.randn(5, 3).cuda())
    assert out.is_cuda
    model.cpu()
    assert all(not p.is_cuda for p in model.parameters())


def test_optimizer_state_lives_on_its_parameters_device():
    model = nn.Linear(3, 2).cuda()
    opt = fg.optim.Adam(model.parameters(), lr=0.1)
    model(fg.randn(4, 3).cuda()).pow(2).mean().backward()
    opt.step()
    state = opt.state[model.weight]
    assert state["exp_avg"].is_cuda and state["exp_avg_sq"].is_cuda and state["step"].is_cuda
    assert state["step"].item() == 1.0


def test_moving_inside_a_compiled_function_is_refused():
    @fg.compile
    def f(x):
        return x.cuda() * 2

    with pytest.raises(CaptureError, match="inside a compiled function"):
        f(fg.ones(2))


def test_save_writes_host_copies_and_load_maps_the_location():
    model = nn.Linear(3, 2).cuda()
    buf = io.BytesIO()
    fg.save(model.state_dict(), buf)
    on_cpu = fg.load(io.BytesIO(buf.getvalue()))
    assert not on_cpu["weight"].is_cuda
    np.testing.assert_array_equal(on_cpu["weight"].numpy(), model.weight.detach().cpu().numpy())
    on_gpu = fg.load(io.BytesIO(buf.getvalue()), map_location="cuda")
    assert on_gpu["weight"].is_cuda
    fresh = nn.Linear(3, 2).cuda()
    fresh.load_state_dict(on_gpu)
    np.testing.assert_array_equal(fresh.weight.detach().cpu().numpy(),
                                  model.weight.detach().cpu().numpy())
    fresh.load_state_dict(on_cpu)   # a host checkpoint into a model on the GPU: copy_ moves it
    assert fresh.weight.is_cuda
    np.testing.assert_array_equal(fresh.weight.detach().cpu().numpy(), on_cpu["weight"].numpy())
    with pytest.raises(TypeError, match="map_location"):
        fg.load(io.BytesIO(buf.getvalue()), map_location={"cuda:0": "cpu"})


def test_without_a_gpu_cuda_says_why_and_how_to_install_it():
    """In a process without the simulator (and, in CI, without a GPU or driver)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("import fusegrad\n"
            "if fusegrad.cuda.is_available(): print('GPU'); raise SystemExit\n"
            "assert fusegrad.cuda.device_count() == 0\n"
            "try:\n"
            "    fusegrad.zeros(2, device='cuda')\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    if out.strip() == "GPU":
        pytest.skip("this machine has a usable GPU")
    assert "CUDA is not available" in out and "pip install 'fusegrad[cuda]'" in out


@pytest.mark.parametrize("cell_type", [nn.LSTMCell, nn.GRUCell])
def test_a_recurrent_cell_moved_after_a_step_runs_on_its_new_device(cell_type):
    """A cell keeps the nodes it derives from its parameters for its next call
    (``recurrent.CellNodes``); a move keeps the parameters' nodes and swaps their arrays, so
    the kept nodes must not outlive it (they remembered the old device)."""
    rng = np.random.default_rng(0)
    cell = cell_type(4, 5)
    for name, p in list(cell.named_parameters()):
        setattr(cell, name, nn.Parameter(fg.tensor(
            rng.standard_normal(tuple(p.shape)).astype(np.float32))))
    x = fg.tensor(np.ones((2, 4), np.float32))
    first = cell(x)
    first = first[0] if isinstance(first, tuple) else first
    want = first.detach().numpy()
    del first
    cell.cuda()
    out = cell(x.to("cuda"))
    out = out[0] if isinstance(out, tuple) else out
    assert out.is_cuda
    np.testing.assert_allclose(out.detach().cpu().numpy(), want, rtol=1e-5, atol=1e-6)
