"""Keeping Python's full garbage collections off the heap a warmed-up process keeps for good.

Every traced op leaves about ten objects that Python's cyclic GC tracks (nodes, their weak
references and input tuples, tensors) alive until the step ends. They outlive the young
collections, so they pile up in the oldest generation, and once they reach a quarter of it a
full collection walks every tracked object in the process. After warm-up most of those belong
to what the first steps loaded and keep for good: the compiled programs and the Numba
dispatchers of their kernels (160,000-380,000 objects on the zoo's recurrent workloads).
That walk took about a quarter of lstmcell_unrolled's uncompiled step.

So, as vLLM does after start-up, when a process that compiled or loaded programs goes on to
replay one from memory, fusegrad collects once and freezes what is alive (``gc.freeze``): later
full collections skip it. Each freeze unfreezes first, so garbage among objects frozen earlier
is collected by the next one. A freeze needs new programs since the last one and runs at most a
tenth of the time (rate-limited by its own cost), so a process that keeps compiling, like a test
suite, pays little.

The young collections cost too: the traced objects of a step outlive several of them (one per
700 tracked allocations by default) and are walked by each. The first freeze raises the
youngest generation's threshold to ``YOUNG_THRESHOLD``, so that most of a step's objects die
before a collection meets them: lstmcell_unrolled's uncompiled step went from 26.5 to 24.9 ms
(three alternating runs each), gru's from 45.3 to 44.2 ms; cyclic garbage waits for at most
that many allocations. ``FUSEGRAD_GC_FREEZE=0`` (or ``set_gc_freeze(False)``, which restores the
threshold) turns both off.
"""
from __future__ import annotations

import gc
import time

from ..lru import switch_from_env

_enabled = [switch_from_env("FUSEGRAD_GC_FREEZE")]
_programs_at_freeze = [0]  # programs made ready in the process when it last froze
_not_before = [0.0]        # perf_counter time before which no freeze runs again
COST_SHARE = 10            # a freeze waits this many times its own duration before the next
freezes = [0]
YOUNG_THRESHOLD = 10_000
_raised_from: list[int | None] = [None]   # the youngest threshold before the first freeze


def set_gc_freeze(enabled: bool) -> None:
    """Whether fusegrad may freeze the long-lived heap after warm-up (see the module's text).
    Turning it off unfreezes what fusegrad froze."""
    _enabled[0] = bool(enabled)
    if not enabled:
        gc.unfreeze()
        young, *older = gc.get_threshold()
        if _raised_from[0] is not None and young == YOUNG_THRESHOLD:  # not changed since
            gc.set_threshold(_raised_from[0], *older)
        _raised_from[0] = None


def replayed(programs_ready: int) -> None:
    """Called when a program is run from memory; ``programs_ready``: the programs compiled or
    loaded in this process so far. Freezes the live heap if new programs were made since the
    last freeze and the last freeze was long enough ago."""
    if programs_ready == _programs_at_freeze[0] or not _enabled[0] or not gc.isenabled():
        return
    start = time.perf_counter()
    if start < _not_before[0]:
        return
    _programs_at_freeze[0] = programs_ready
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    freezes[0] += 1
    young, *older = gc.get_threshold()
    if _raised_from[0] is None and 0 < young < YOUNG_THRESHOLD:
        _raised_from[0] = young
        gc.set_threshold(YOUNG_THRESHOLD, *older)
    end = time.perf_counter()
    _not_before[0] = end + COST_SHARE * (end - start)
