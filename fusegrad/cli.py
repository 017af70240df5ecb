"""``fusegrad`` command line: ``train`` (the demo), ``dump`` (every compiler stage)."""
from __future__ import annotations

import argparse
import sys


def _train(args: argparse.Namespace) -> int:
    from . import demo
    from .tracer.realize import set_backend
    set_backend(args.backend)
    demo.train(steps=args.steps, batch=args.batch, seed=args.seed)
    return 0


def _dump(args: argparse.Namespace) -> int:
    from .dump import dump_demo_step
    print(dump_demo_step(batch=args.batch, stages=args.stage, fmt=args.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusegrad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the guide's MLP on built-in synthetic data")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", choices=["numba_cpu", "interpreter"], default=None)
    t.set_defaults(func=_train)
    d = sub.add_parser("dump", help="print the demo training step at every compiler stage")
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--stage", action="append",
                   choices=["traced", "passes", "schedule", "source", "summary"],
                   help="stages to print (default: all)")
    d.add_argument("--format", choices=["text", "json", "dot"], default="text")
    d.set_defaults(func=_dump)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
