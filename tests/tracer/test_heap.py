"""The GC policy: after warm-up the live heap is frozen out of full collections (tracer/heap.py)."""
import gc
import weakref

import pytest

import fusegrad as fg
from fusegrad.tracer import heap


class _Cyclic:
    def __init__(self):
        self.me = self


@pytest.fixture
def policy(monkeypatch):
    """The policy on, with no rate limit left from earlier tests; unfrozen afterwards."""
    monkeypatch.setattr(heap, "_enabled", [True])
    monkeypatch.setattr(heap, "_not_before", [0.0])
    threshold = gc.get_threshold()
    yield heap
    gc.unfreeze()
    gc.set_threshold(*threshold)
    heap._raised_from[0] = None


def _new_program_then_replay(width: int) -> None:
    """Compile a program of a shape no other test uses, then replay it from memory."""
    x = fg.ones(width, 3)
    for _ in range(3):  # the first run reads x as a constant, the second as a buffer
        (x * 3.0 + 1.5).sum().item()


def test_replaying_after_new_programs_freezes_the_live_heap(policy):
    before = heap.freezes[0]
    _new_program_then_replay(7)
    assert heap.freezes[0] == before + 1
    assert gc.get_freeze_count() > 0


def test_garbage_among_frozen_objects_is_collected_by_the_next_freeze(policy):
    cyclic = _Cyclic()
    gone = weakref.ref(cyclic)
    _new_program_then_replay(11)   # the cycle is alive here, so it is frozen
    del cyclic
    gc.collect()
    assert gone() is not None     # a full collection skips frozen objects...
    policy._not_before[0] = 0.0
    _new_program_then_replay(13)
    assert gone() is None         # ...the next freeze unfreezes and collects first


def test_no_freeze_without_new_programs_or_when_turned_off(policy):
    _new_program_then_replay(17)
    count = heap.freezes[0]
    policy._not_before[0] = 0.0
    _new_program_then_replay(17)   # the same program: nothing new since the last freeze
    assert heap.freezes[0] == count
    heap.set_gc_freeze(False)
    assert gc.get_freeze_count() == 0
    _new_program_then_replay(19)
    assert heap.freezes[0] == count


def test_a_freeze_waits_ten_times_its_own_duration(policy):
    _new_program_then_replay(23)
    count = heap.freezes[0]
    policy._not_before[0] = float("inf")
    _new_program_then_replay(29)
    assert heap.freezes[0] == count


def test_the_first_freeze_raises_the_young_threshold_and_turning_off_restores_it(policy):
    gc.set_threshold(700, 10, 10)
    policy._raised_from[0] = None
    _new_program_then_replay(31)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    heap.set_gc_freeze(False)
    assert gc.get_threshold() == (700, 10, 10)
