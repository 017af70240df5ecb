"""Every code block of the user's guide runs in fusegrad after changing only the imports.

The guide (tests/data/SEED-torch-nn-optim-guide.md, a copy of shared/) is executed block by
block, like a notebook, in one namespace; where a block uses names the guide leaves to the
reader (``input``, ``target``, ``train_loader``...) they are provided first. After each block,
assertions show that it did what it does in PyTorch.
"""
import ast
import pathlib
import re

import numpy as np
import pytest

import fusegrad
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.tracer.realize import STATS

GUIDE = pathlib.Path(__file__).parent / "data" / "SEED-torch-nn-optim-guide.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def port(source: str) -> str:
    """The user's only change: the imports (torch.nn, torch.optim, torch -> fusegrad's)."""
    source = source.replace("torch.nn", "fusegrad.nnlib").replace("torch.optim", "fusegrad.optimlib")
    return re.sub(r"\btorch\b", "fusegrad", source)


def run_block(source: str, ns: dict):
    """Execute a block; return the value of its last line when that line is an expression."""
    tree = ast.parse(port(source))
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body = tree.body[:-1]
    exec(compile(tree, str(GUIDE), "exec"), ns)
    if last is not None:
        return eval(compile(ast.Expression(last.value), str(GUIDE), "eval"), ns)
    return None


def _params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def check_0(ns, value):
    model = ns["CustomModel"]()
    x = fusegrad.randn(2, 3)
    assert isinstance(model, nn.Module) and model(x) is x


def check_1(ns, value):
    assert isinstance(value, nn.Linear) and tuple(value.weight.shape) == (256, 784)


def check_2(ns, value):
    assert isinstance(value, nn.Conv3d) and tuple(value.weight.shape) == (64, 3, 3, 3, 3)
    assert tuple(value(fusegrad.randn(1, 3, 4, 4, 4)).shape) == (1, 64, 2, 2, 2)


def check_3(ns, value):
    assert isinstance(value, nn.GRU)
    out, h = value(fusegrad.randn(5, 2, 100))
    assert tuple(out.shape) == (5, 2, 256) and tuple(h.shape) == (2, 2, 256)


def check_4(ns, value):
    out = ns["model"](fusegrad.randn(2, 784)).detach().numpy()
    assert out.shape == (2, 10) and np.all((out > 0) & (out < 1))


def check_5(ns, value):
    assert isinstance(ns["criterion"], nn.BCELoss)


def setup_6(ns):
    ns["input"] = fusegrad.randn(8, 784)
    ns["target"] = fusegrad.randint(0, 10, (8,))


def check_6(ns, value):
    loss = ns["loss"]
    assert loss.shape == () and np.isfinite(loss.item())
    assert all(p.grad is not None for p in ns["model"].parameters())


def check_7(ns, value):
    out = ns["model"](fusegrad.randn(2, 3, 10, 10))
    assert tuple(out.shape) == (2, 64, 4, 4)


def check_8(ns, value):
    layers = ns["layers"]
    assert len(layers) == 5 and sum(p.numel() for p in layers.parameters()) == 5 * 110


def check_9(ns, value):
    assert isinstance(value, nn.Dropout2d) and value.p == 0.2


def check_10(ns, value):
    assert isinstance(value, nn.BatchNorm1d) and value.num_features == 256


def check_11(ns, value):
    emb = ns["embedding"]
    assert tuple(emb(fusegrad.tensor([[1, 2, 9999]])).shape) == (1, 3, 300)


def check_12(ns, value):
    att = ns["attention"]
    q = fusegrad.randn(3, 2, 512)
    out, weights = att(q, q, q)
    assert tuple(out.shape) == (3, 2, 512) and tuple(weights.shape) == (2, 3, 3)


def setup_13(ns):
    ns["model"] = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10), nn.Sigmoid())


def check_13(ns, value):
    model = ns["model"]
    model.apply(ns["weight_init"])
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert not np.any(m.bias.detach().numpy())
            bound = np.sqrt(6 / (m.in_features + m.out_features))
            assert np.abs(m.weight.detach().numpy()).max() <= bound


def check_14(ns, value):
    assert ns["count_parameters"](ns["model"]) == 784 * 256 + 256 + 256 * 10 + 10


def check_15(ns, value):
    assert ns["device"] == fusegrad.device("cpu") and ns["model"].to(ns["device"]) is ns["model"]


def setup_16(ns):
    ns["criterion"] = nn.BCELoss()
    ns["input"] = fusegrad.randn(8, 784)
    ns["output"] = ns["model"](ns["input"])
    ns["target"] = fusegrad.rand(8, 10)
    ns["_before"] = _params(ns["model"])


def check_16(ns, value):
    after = _params(ns["model"])
    assert any(not np.array_equal(a, b) for a, b in zip(ns["_before"], after))


def check_17(ns, value):
    assert ns["sgd_momentum"].param_groups[0]["nesterov"] is True


def check_18(ns, value):
    assert isinstance(ns["adam"], optim.Adam) and ns["adam"].defaults["betas"] == (0.9, 0.999)


def check_19(ns, value):
    assert isinstance(ns["rmsprop"], optim.RMSprop)


def check_20(ns, value):
    sched, opt = ns["scheduler"], ns["optimizer"]
    for _ in range(30):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.001)


def setup_21(ns):
    ns["optimizer"] = optim.SGD(ns["model"].parameters(), lr=0.1)


def check_21(ns, value):
    sched = ns["scheduler"]
    for _ in range(100):
        ns["optimizer"].step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.05)  # half-way down the cosine


def check_22(ns, value):
    opt = optim.SGD(ns["model"].parameters(), lr=0.1)
    sched = ns["CustomScheduler"](opt, total_epochs=10)
    lrs = []
    for _ in range(5):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.09, 0.08, 0.07, 0.06, 0.05])


def setup_23(ns):
    model = ns["model"]
    model.zero_grad()
    (model(fusegrad.randn(4, 784)) * 100).sum().backward()


def check_23(ns, value):
    grads = [p.grad.numpy() for p in ns["model"].parameters()]
    assert max(np.abs(g).max() for g in grads) <= 1.0


def check_24(ns, value):
    model = ns["model"]
    opt = ns["OptimWithDecay"](model, lr=0.1)
    opt.params = list(model.parameters())  # the guide keeps a generator: one pass only
    before = _params(model)
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    opt.step()
    for b, g, a in zip(before, grads, _params(model)):
        np.testing.assert_allclose(a, b - 0.1 * (g + 1e-4 * b), rtol=1e-5, atol=1e-6)


def check_25(ns, value):
    assert isinstance(ns["get_optimizer"](ns["model"], "adam"), optim.Adam)
    assert isinstance(ns["get_optimizer"](ns["model"], "SGD"), optim.SGD)


def check_26(ns, value):
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    rng = np.random.default_rng(0)
    loader = [(fusegrad.tensor(rng.standard_normal((8, 20)).astype(np.float32)),
               fusegrad.tensor(rng.integers(0, 4, 8))) for _ in range(100)]
    opt = optim.SGD(model.parameters(), lr=1e-7)
    counts = []

    def batches():
        for batch in loader:
            counts.append(STATS.programs_compiled)
            yield batch

    before = STATS.programs_compiled
    lrs, losses = ns["find_lr"](model, batches(), opt, nn.CrossEntropyLoss())
    assert len(lrs) == 100 and all(np.isfinite(losses))
    # step 1 compiles the forward and backward, the optimizer's update (replayed after) and the
    # guide's `loss > 100` test (a tensor comparison) as a third tiny program; the 99 steps with
    # other lrs compile nothing
    assert 1 <= counts[1] - before <= 3
    assert STATS.programs_compiled == counts[1]


def check_27(ns, value):
    model = nn.Linear(3, 2)
    opt = ns["CustomOptimizer"](model.parameters(), lr=0.5)
    model(fusegrad.ones(1, 3)).sum().backward()
    before = _params(model)
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    opt.step()
    for b, g, a in zip(before, grads, _params(model)):
        np.testing.assert_allclose(a, b - 0.5 * g, rtol=1e-6)


def check_28(ns, value):
    base = ns["MultiOptimModel"]

    class Model(base):
        def __init__(self):
            nn.Module.__init__(self)
            self.feature_extractor = nn.Sequential(nn.Linear(4, 3))
            self.classifier = nn.Sequential(nn.Linear(3, 2))

    opts = Model().get_optimizers()
    assert isinstance(opts["features"], optim.SGD) and isinstance(opts["classifier"], optim.Adam)


def check_29(ns, value, tmp_path):
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(fusegrad.ones(1, 3)).sum().backward()
    opt.step()
    path = str(tmp_path / "ckpt.fg")
    ns["save_optimization_state"](model, opt, path)
    saved = _params(model)
    momentum = opt.state_dict()["state"][0]["momentum_buffer"].numpy().copy()
    model(fusegrad.ones(1, 3)).sum().backward()
    opt.step()
    ns["load_optimization_state"](model, opt, path)
    for a, b in zip(saved, _params(model)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["momentum_buffer"].numpy(), momentum)


class _Reader:
    """The namespace the blocks run in, and how many have run in it. A block runs after every
    block before it: one asked for out of order (``-k``, or a pytest-xdist worker given only
    some blocks) first runs those it follows in a fresh namespace."""

    def __init__(self) -> None:
        self.ns: dict = {}
        self.done = 0

    def restart(self) -> None:
        fusegrad.manual_seed(0)
        # the reader's script starts with ``import torch``, ported to ``import fusegrad``
        self.ns = {"__name__": "guide", "fusegrad": fusegrad}
        self.done = 0

    def run(self, index: int, tmp_path) -> None:
        if index < self.done or self.done == 0:
            self.restart()
        while self.done <= index:
            i, self.done = self.done, 0  # a block that fails leaves the namespace unusable
            setup = globals().get(f"setup_{i}")
            if setup is not None:
                setup(self.ns)
            value = run_block(BLOCKS[i], self.ns)
            check = globals()[f"check_{i}"]
            if i == 29:
                check(self.ns, value, tmp_path)
            else:
                check(self.ns, value)
            self.done = i + 1


READER = _Reader()


def test_guide_has_30_blocks():
    assert len(BLOCKS) == 30


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block(index, tmp_path):
    READER.run(index, tmp_path)
