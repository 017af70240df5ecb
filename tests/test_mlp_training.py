"""The guide's MLP trained in fusegrad and in torch from the same weights and batches."""
import numpy as np
import pytest
import torch

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad import demo


def _torch_copy(model: nn.Module) -> torch.nn.Module:
    ref = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    with torch.no_grad():
        for (name, p), (tname, tp) in zip(model.named_parameters(), ref.named_parameters()):
            assert name == tname
            tp.copy_(torch.from_numpy(p.detach().numpy().copy()))
    return ref


@pytest.mark.parametrize("backend", ["numba_cpu", "interpreter"])
def test_mlp_50_steps_matches_torch(backend):
    fg.set_backend(backend)
    try:
        fg.manual_seed(0)
        model = demo.make_mlp()
        ref = _torch_copy(model)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                        weight_decay=1e-4)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                  weight_decay=1e-4)
        step = demo.make_step(model, opt, nn.CrossEntropyLoss())
        ref_loss_fn = torch.nn.CrossEntropyLoss()
        for i, (xb, yb) in enumerate(demo.synthetic_batches(50, 64, seed=1)):
            loss = step(fg.from_numpy(xb), fg.from_numpy(yb)).item()
            ref_opt.zero_grad()
            ref_loss = ref_loss_fn(ref(torch.from_numpy(xb)), torch.from_numpy(yb))
            ref_loss.backward()
            ref_opt.step()
            assert loss == pytest.approx(ref_loss.item(), rel=1e-4), f"step {i}"
        for p, tp in zip(model.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-3,
                                       atol=1e-5)
    finally:
        fg.set_backend(None)


def test_changing_lr_does_not_recompile():
    from fusegrad.tracer.realize import STATS
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    x, y = fg.randn(16, 8), fg.randint(0, 3, (16,))
    step(x, y).item()
    step(x, y).item()  # second step: momentum buffers exist, the steady-state program
    before = STATS.programs_compiled
    for i in range(5):
        opt.param_groups[0]["lr"] = 0.1 / (i + 2)
        step(x, y).item()
    assert STATS.programs_compiled == before
