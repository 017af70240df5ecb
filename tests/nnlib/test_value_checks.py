"""Value checks of losses and embeddings (class indices, probabilities, embedding indices) raise
torch's exception types on every backend, whether the checked value is computed already or
pending, and inside ``fusegrad.compile`` on every replay of the arguments they come from."""
from __future__ import annotations

import numpy as np
import pytest
from parity import BACKENDS, using_backend

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.nnlib.functional as F

# How the checked value reaches the layer: computed, a reshaped buffer, or computed from others.
GIVEN = {
    "computed": lambda t: t,
    "reshaped": lambda t: t.reshape(-1).reshape(t.shape),
    "pending": lambda t: t * 1,
}


@pytest.mark.parametrize("given", GIVEN)
@pytest.mark.parametrize("backend", BACKENDS)
def test_class_index_out_of_range_is_an_index_error(backend, given):
    with using_backend(backend):
        target = GIVEN[given](fg.tensor([0, 3]))
        with pytest.raises(IndexError, match=r"cross_entropy: Target 3 is out of bounds"):
            F.cross_entropy(fg.randn(2, 3), target)
        with pytest.raises(IndexError, match=r"nll_loss: Target -2 is out of bounds"):
            F.nll_loss(fg.randn(2, 3), GIVEN[given](fg.tensor([-2, 0])))
        ignored = GIVEN[given](fg.tensor([-1, 2]))
        assert F.nll_loss(fg.randn(2, 3), ignored, ignore_index=-1).numpy().shape == ()


@pytest.mark.parametrize("given", GIVEN)
@pytest.mark.parametrize("backend", BACKENDS)
def test_probabilities_outside_0_1_are_a_runtime_error(backend, given):
    with using_backend(backend):
        for bad in (1.5, -0.25, float("nan")):
            with pytest.raises(RuntimeError, match="all elements of input should be between 0 "
                                                   "and 1"):
                F.binary_cross_entropy(GIVEN[given](fg.tensor([0.5, bad])),
                                       fg.tensor([0.0, 1.0]))
        fine = GIVEN[given](fg.tensor([0.0, 1.0]))
        assert F.binary_cross_entropy(fine, fg.tensor([0.0, 1.0])).item() == 0.0


@pytest.mark.parametrize("given", GIVEN)
@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_index_out_of_range_is_an_index_error(backend, given):
    with using_backend(backend):
        layer = nn.Embedding(4, 2)
        with pytest.raises(IndexError, match="Embedding: index 4 is out of range"):
            layer(GIVEN[given](fg.tensor([[1, 4]])))
        with pytest.raises(IndexError, match="Embedding: index -1 is out of range"):
            layer(GIVEN[given](fg.tensor([-1])))


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_indices_widened_to_int64_are_checked(backend):
    with using_backend(backend):
        def widened(values):
            return fg.tensor(np.array(values, np.int32)).long()
        assert F.cross_entropy(fg.randn(2, 3), widened([0, 2])).numpy().shape == ()
        with pytest.raises(IndexError, match="Target 3 is out of bounds"):
            F.cross_entropy(fg.randn(2, 3), widened([3, 0]))
        nn.Embedding(4, 2)(fg.tensor(np.array([0, 3], np.int32))).detach().numpy()
        with pytest.raises(IndexError, match="index 4 is out of range"):
            nn.Embedding(4, 2)(widened([4]))


def test_interpreter_checks_without_the_numba_backend(monkeypatch):
    import fusegrad.backends.numba_cpu.checks as numba_checks

    def refuse(dtype):
        raise AssertionError("the interpreter backend loaded a Numba check kernel")
    monkeypatch.setattr(numba_checks, "in_range_kernel", refuse)
    with using_backend("interpreter"):
        F.cross_entropy(fg.randn(2, 3), fg.tensor([0, 2])).numpy()
        with pytest.raises(IndexError, match="Target 5 is out of bounds"):
            F.cross_entropy(fg.randn(2, 3), fg.tensor([0, 5]))
        with pytest.raises(IndexError, match="index 9 is out of range"):
            nn.Embedding(4, 2)(fg.tensor([9]))


def test_embedding_indices_are_checked_on_every_replay():
    layer = nn.Embedding(4, 2)

    @fg.compile
    def embed(tokens):
        return layer(tokens).detach()

    embed(fg.tensor([0, 1]))
    embed(fg.tensor([2, 3]))
    with pytest.raises(IndexError, match="index 4 is out of range"):
        embed(fg.tensor([4, 0]))


def test_targets_reshaped_inside_a_compiled_function_are_checked_on_every_replay():
    model = nn.Linear(4, 3)

    @fg.compile
    def loss_of(x, y):
        return F.cross_entropy(model(x), y.reshape(-1)).detach()

    x = fg.randn(2, 4)
    loss_of(x, fg.tensor([[0], [2]]))
    loss_of(x, fg.tensor([[1], [2]]))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        loss_of(x, fg.tensor([[3], [0]]))


def test_targets_computed_inside_a_compiled_function_are_checked_when_traced():
    model = nn.Linear(4, 3)

    @fg.compile
    def loss_of(x, y):
        return F.cross_entropy(model(x), y + 1).detach()

    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        loss_of(fg.randn(2, 4), fg.tensor([2, 0]))
