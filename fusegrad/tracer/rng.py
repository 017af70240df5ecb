"""Random state: ``manual_seed`` seeds both eager creation (numpy) and in-graph ``rand`` nodes."""
from __future__ import annotations

import numpy as np

_state = {"seed": 0, "offset": 0, "gen": np.random.default_rng(0)}


def manual_seed(seed: int) -> None:
    """Seed every random source, so that runs repeat exactly."""
    _state["seed"] = int(seed)
    _state["offset"] = 0
    _state["gen"] = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)


def initial_seed() -> int:
    return _state["seed"]


def generator() -> np.random.Generator:
    return _state["gen"]


def next_key(count: int) -> np.ndarray:
    """(seed, offset) for ``count`` counter-based numbers, advancing the offset past them."""
    key = np.array([_state["seed"], _state["offset"]], dtype=np.int64)
    _state["offset"] += int(count)
    return key


class Generator:
    """An independent random source (``torch.Generator``): ``generator=`` of ``rand``,
    ``randn``, ``randint``, ``randperm``, ``random_split`` and ``DataLoader`` shuffling."""

    def __init__(self, device: object = "cpu"):
        self._seed = int(np.random.SeedSequence().entropy) & 0xFFFFFFFFFFFFFFFF
        self.gen = np.random.default_rng(self._seed)

    def manual_seed(self, seed: int) -> "Generator":
        self._seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.gen = np.random.default_rng(self._seed)
        return self

    def seed(self) -> int:
        """Reseed from a non-deterministic source; the new seed."""
        return self.manual_seed(int(np.random.SeedSequence().entropy) & 0xFFFFFFFFFFFFFFFF)._seed

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict:
        return self.gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.gen.bit_generator.state = state


def source(gen: Generator | None) -> np.random.Generator:
    """The numpy generator behind ``gen``, or the global one ``manual_seed`` seeds."""
    return _state["gen"] if gen is None else gen.gen


def get_rng_state() -> dict:
    return {"seed": _state["seed"], "offset": _state["offset"],
            "gen": _state["gen"].bit_generator.state}


def set_rng_state(state: dict) -> None:
    _state["seed"], _state["offset"] = state["seed"], state["offset"]
    gen = np.random.default_rng()
    gen.bit_generator.state = state["gen"]
    _state["gen"] = gen
