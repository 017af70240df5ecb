"""The long differential fuzzing run: ``python scripts/fuzz.py --graphs 10000 [--seed N]``.

Runs the generator and checks of ``tests/fuzz`` outside pytest, printing progress every
``--every`` graphs and, at the end, graphs, ops (in all and by kind), realization modes run and
mismatches. A failure shrinks to a minimal program and is printed with the Hypothesis
``@reproduce_failure`` blob; ``--seed`` replays a whole run.

Nine tenths of a graph's time is Numba compiling its new kernels (~0.1-0.3 s each), so for long
runs ``--rotate`` runs every graph on numba_cpu (``all``) and on the interpreter, and one of the
other modes (``each``, ``forward_first``, ``compiled``) in turn; and ``NUMBA_OPT=0`` halves the
compile time without changing any result (the kernels use no fast-math, so LLVM keeps IEEE
semantics at every optimisation level).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "fuzz")]
os.environ.setdefault("FUSEGRAD_CACHE_DIR", str(ROOT / ".fusegrad-cache"))

from differential import MODES, STATS, checker  # noqa: E402
from graphgen import Program, programs  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def report(started: float) -> str:
    graphs, ops = STATS["graphs"], STATS["ops"]
    kinds = ", ".join(f"{k[4:]} {v}" for k, v in sorted(STATS.items()) if k.startswith("ops:"))
    modes = ", ".join(f"{k[5:]} {v}" for k, v in sorted(STATS.items()) if k.startswith("mode:"))
    elapsed = time.time() - started
    return (f"graphs {graphs}, ops {ops}, mismatches {STATS['mismatches']}, "
            f"ill-conditioned comparisons skipped {STATS['ill_conditioned']}, "
            f"{elapsed:.0f} s ({graphs / max(elapsed, 1e-9):.2f} graphs/s)\n"
            f"  ops by kind: {kinds}\n  modes: {modes}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--graphs", type=int, default=10000)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed of the run")
    parser.add_argument("--every", type=int, default=100, help="print progress every N graphs")
    parser.add_argument("--rotate", action="store_true",
                        help="all + interpreter on every graph, the other modes in turn")
    args = parser.parse_args()
    rotating = [m for m in MODES if m not in ("all", "interpreter")]
    checks = [checker(("all", "interpreter", m)) for m in rotating] if args.rotate \
        else [checker()]
    started = time.time()

    @settings(max_examples=args.graphs, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(program=programs(max_steps=args.max_steps), seed=st.integers(0, 2**32 - 2))
    def run(program: Program, seed: int) -> None:
        checks[STATS["graphs"] % len(checks)](program, seed)
        if STATS["graphs"] % args.every == 0:
            print(report(started), flush=True)

    if args.seed is not None:
        run = seed(args.seed)(run)
    try:
        run()
    finally:
        print("final:", report(started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
