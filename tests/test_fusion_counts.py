"""Fusion seen from the front end: kernel counts of the compiled programs, and the decisions
that explain them."""
import gc

import numpy as np
import pytest

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad.backends.pipeline import full_report
from fusegrad.ir.fusion_decisions import DecisionKind
from fusegrad.ir.schedule import Extern
from fusegrad.optimlib.optimizer import eager_updates
from fusegrad.tracer.realize import STATS
from fusegrad.tracer.tensor import PENDING

PLACED = {DecisionKind.STARTED, DecisionKind.FUSED, DecisionKind.FUSED_KEPT, DecisionKind.EPILOGUE,
          DecisionKind.REDUCTION, DecisionKind.EXTERN}


@pytest.fixture(autouse=True)
def _nothing_pending():
    """Realize what earlier tests in this process left pending, so the counted program holds
    only the test's own graph: a layer whose call raised (a conv given the wrong channels)
    can outlive its test with its lazily initialised weights, which the next realization
    computes too (an extra kernel)."""
    gc.collect()
    left = list(PENDING.values())
    if left:
        fg.realize(*left)


def _last_report():
    # a program loaded from the disk cache (a second run of the suite) ran no stage here: its
    # schedule is rebuilt
    return full_report(STATS.last_entry.compiled.report)


def _kinds(item) -> list[DecisionKind]:
    return [d.kind for d in item.decisions]


def test_linear_relu_forward_is_one_matmul_and_one_kernel():
    x, w, b = fg.randn(8, 6), fg.randn(6, 5), fg.randn(5)
    fg.relu(x @ w + b).realize()
    report = _last_report()
    assert (report.extern_count, report.kernel_count) == (1, 1)
    extern, kernel = report.schedule.items
    assert _kinds(extern)[0] is DecisionKind.EXTERN
    started = kernel.decisions[0]
    assert started.kind is DecisionKind.STARTED and not started.refusals, "the matmul is extern"
    assert DecisionKind.FUSED in _kinds(kernel)


def test_row_softmax_is_at_most_two_kernels():
    x = fg.randn(16, 10)
    fg.softmax(x, dim=1).realize()
    assert _last_report().kernel_count <= 2
    assert _last_report().extern_count == 0
    kinds = [k for item in _last_report().schedule.items for k in _kinds(item)]
    assert DecisionKind.REDUCTION in kinds and DecisionKind.EPILOGUE in kinds


def test_sgd_update_of_a_parameter_is_one_kernel():
    p = nn.Parameter(fg.randn(32, 16))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    for _ in range(2):  # the second step has a momentum buffer: the steady-state update
        p.grad = fg.randn(32, 16)
        opt.step()
    report = _last_report()
    assert (report.kernel_count, report.extern_count) == (1, 0)
    assert np.all(np.isfinite(p.detach().numpy()))


def test_mlp_training_step_kernel_count():
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = fg.randn(4, 12), fg.randint(0, 3, (4,))
    with eager_updates():  # the update traced with the forward and backward: one program
        for _ in range(2):
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            opt.step()
    report = _last_report()
    # 5 matmuls (2 forward, 3 backward: the first layer's input gradient is dead code), and
    # one update kernel per parameter among the fused forward/backward kernels
    assert report.extern_count == 5
    assert report.kernel_count <= 10
    for item in report.schedule.items:  # every computed node placed once, with its reason
        placed = [d.nodes[0] for d in item.decisions if d.kind in PLACED]
        assert sorted(map(id, placed)) == sorted(map(id, [item.node] if isinstance(item, Extern)
                                                     else item.body))


def test_cross_entropy_recomputes_its_one_hot_mask_instead_of_storing_it():
    """The one-hot mask ``target[i] == class[j]`` is read by the loss's kernel and by the
    gradient's; it reads 16 + 200 values to make 3,200, so the gradient's kernel computes it
    again and no kernel writes it."""
    logits = fg.randn(16, 200, requires_grad=True)
    target = fg.tensor(np.random.default_rng(0).integers(0, 200, 16))
    loss = nn.functional.cross_entropy(logits, target)
    loss.backward()
    fg.realize(loss, logits.grad)
    kernels = _last_report().schedule.kernels
    assert not [n for k in kernels for n in k.outputs if n.dtype == "bool"]
    recomputed = [d for k in kernels for d in k.decisions if d.kind is DecisionKind.RECOMPUTED]
    assert [d.nodes[0].op for d in recomputed] == ["eq"]
    assert "it reads 216 elements to make 3200" in recomputed[0].message


def test_a_linear_on_3d_input_adds_its_bias_where_its_rows_are_read():
    """``nn.Linear`` on (2, 5, 8) adds its bias to the (10, 300) product before taking the
    leading dims back, so ``logits.reshape(-1, 300)`` cancels that reshape and the add joins the
    log-softmax's kernel: no kernel of its own writes the (2, 5, 300) logits."""
    rng = np.random.default_rng(0)
    lin = nn.Linear(8, 300)
    x = fg.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    target = fg.tensor(rng.integers(0, 300, 10))
    logits = lin(x)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 300), target)
    fg.realize(loss)
    kernels = _last_report().schedule.kernels
    assert not [k for k in kernels if k.shape == (2, 5, 300)]
    (softmax,) = [k for k in kernels if k.shape == (10, 300) and k.reduce_axes == (1,)]
    assert "add" in [n.op for n in softmax.body]
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    want = x.numpy() @ w.T + b
    np.testing.assert_allclose(logits.detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_product_over_an_inner_dim_of_one_gives_the_bits_of_blas():
    """``x_t @ W_ih^T`` of an LSTMCell with one input feature: one kernel, no BLAS call, and
    the same bits (each element is one product)."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s) for s in ((16, 1), (1, 204), (16, 204)))
    out = fg.tensor(a) @ fg.tensor(b) + fg.tensor(c)
    out.realize()
    report = _last_report()
    assert (report.extern_count, report.kernel_count) == (0, 1)
    np.testing.assert_array_equal(out.numpy(), np.matmul(a, b) + c)
