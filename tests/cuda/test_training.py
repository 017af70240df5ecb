"""Training steps on the GPU equal the CPU's: the guide's MLP (Linear-ReLU-Linear, cross
entropy, SGD with Nesterov momentum and weight decay: the zoo's ``mlp`` at 20-16-10 instead of
784-32-10, since the simulator runs every GPU thread in Python) and the zoo's ``tiny`` model
(Adam), eager and under ``fusegrad.compile``; dropout masks are the same bits on both devices;
a compiled replay keeps its inputs and outputs on the device."""
from __future__ import annotations

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nn.functional as F
from fusegrad.bench.zoo import Built, build

STEPS = 2


def _mlp() -> Built:
    """The zoo's ``mlp`` (the guide's MLP) on simulator-sized shapes."""
    nn = fg.nn
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = fg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                       weight_decay=1e-4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 20)).astype(np.float32)
    return Built(model, nn.CrossEntropyLoss(), opt, (fg.tensor(x),),
                 fg.tensor(rng.integers(0, 10, 8)))


def _build(name: str) -> Built:
    return _mlp() if name == "mlp" else build(name, fg, small=True, seed=0)


def _train(name: str, device: str, compiled: bool) -> tuple[list[float], list[np.ndarray]]:
    built = _build(name)
    built.model.to(device)
    inputs = tuple(x.to(device) for x in built.inputs)
    target = built.target.to(device)

    def step(*xs):
        built.optimizer.zero_grad()
        loss = built.loss_fn(built.model(*xs[:-1]), xs[-1])
        loss.backward()
        built.optimizer.step()
        return loss

    run = fg.compile(step) if compiled else step
    losses = []
    for _ in range(STEPS):
        loss = run(*inputs, target)
        assert loss.device == fg.device(device)
        losses.append(loss.item())
    weights = [p.detach().cpu().numpy().copy() for p in built.model.parameters()]
    return losses, weights


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", ["mlp", "tiny"])
def test_training_steps_on_gpu_equal_cpu(name, compiled):
    cpu_losses, cpu_weights = _train(name, "cpu", compiled)
    gpu_losses, gpu_weights = _train(name, "cuda", compiled)
    # sums (the loss, the matmuls' dot products, the bias gradients) add in another order on
    # the GPU: float32 rounding, nothing more
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(gpu_weights, cpu_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dropout_masks_are_bit_identical_on_cpu_and_gpu():
    x = np.random.default_rng(0).standard_normal((4, 33)).astype(np.float32)
    outs = []
    for device in ("cpu", "cuda"):
        fg.manual_seed(1234)
        outs.append(F.dropout(fg.tensor(x, device=device), 0.3, training=True).cpu().numpy())
    assert (outs[0] == 0).any() and (outs[0] != 0).any()
    np.testing.assert_array_equal(outs[1], outs[0])   # bit for bit, masks and scaled values


def test_a_compiled_replay_keeps_data_on_the_device(monkeypatch):
    built = _mlp()
    built.model.to("cuda")
    x, y = built.inputs[0].cuda(), built.target.cuda()

    @fg.compile
    def step(x, y):
        built.optimizer.zero_grad()
        loss = built.loss_fn(built.model(x), y)
        loss.backward()
        built.optimizer.step()
        return loss

    step(x, y)
    from fusegrad.backends.numba_cuda import program
    from fusegrad.tracer.realize import STATS
    uploads: list[np.ndarray] = []
    real_upload = program.to_device

    def counting_upload(array):
        uploads.append(np.array(array))
        return real_upload(array)

    monkeypatch.setattr(program, "to_device", counting_upload)
    entry = STATS.last_entry
    assert isinstance(entry.compiled.program, program.CudaProgram)
    prog = entry.compiled.program
    syncs, copies = prog.syncs, prog.uploads
    for _ in range(2):
        loss = step(x, y)
        assert loss.is_cuda
    # only host scalars (learning rate, momentum...) and the loss's class table go up, staged
    # together (one copy per dtype, and none when no value changed); no data, parameter or
    # state; the program never waits for the GPU (no bounds checks in this step)
    assert uploads == []
    (run,) = prog._runs.values()
    staged = [prog.inputs[k] for slots, *_ in run.staging for k in slots]
    assert staged and all(n.size in (1, 10) for n in staged)
    assert prog.uploads - copies <= 2 * len(run.staging)
    assert prog.syncs == syncs == 0
    # SGD's updates are written straight into the parameters and momenta: the parameters are
    # inputs twice (the forward's leaf and the optimizer's detached one), one array each
    in_place = [d for d in prog.assigns if d.in_place]
    assert len(in_place) >= 4, prog.describe()


def test_a_failed_index_check_leaves_the_parameters_untouched():
    """The GPU reads a program's bounds-check flag after every item has run: a program with
    checks writes its updates at the end, after the check, never in place."""
    fg.manual_seed(0)
    emb = fg.nn.Embedding(5, 3).to("cuda")
    opt = fg.optim.SGD(emb.parameters(), lr=0.1)

    @fg.compile
    def step(ids):
        opt.zero_grad()
        loss = emb(ids * 2).sum()   # computed indices: checked by the program, not the host
        loss.backward()
        opt.step()
        return loss

    step(fg.tensor(np.array([0, 1, 2]), device="cuda"))
    before = emb.weight.detach().cpu().numpy().copy()
    with pytest.raises(IndexError):
        step(fg.tensor(np.array([0, 1, 3]), device="cuda"))   # 6 is out of range
    np.testing.assert_array_equal(emb.weight.detach().cpu().numpy(), before)
    step(fg.tensor(np.array([2, 1, 0]), device="cuda"))
    assert not np.array_equal(emb.weight.detach().cpu().numpy(), before)


def test_a_host_scalar_changing_only_its_sign_of_zero_is_sent_again():
    @fg.compile
    def divide(x, s):
        return x / s

    x = fg.tensor(np.ones(3, np.float32), device="cuda")
    assert divide(x, fg.tensor(0.0)).cpu().numpy()[0] == np.inf
    assert divide(x, fg.tensor(-0.0)).cpu().numpy()[0] == -np.inf
