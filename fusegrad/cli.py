"""``fusegrad`` command line: ``train`` (the demo), ``dump`` (every compiler stage), ``cache``."""
from __future__ import annotations

import argparse
import sys


def _train(args: argparse.Namespace) -> int:
    from . import demo
    from .tracer.realize import set_backend
    set_backend(args.backend)
    demo.train(steps=args.steps, batch=args.batch, seed=args.seed, compiled=args.compile)
    return 0


def _dump(args: argparse.Namespace) -> int:
    from .dump import dump_command
    return dump_command(args.target, train=args.train, batch=args.batch, stages=args.stage,
                        fmt=args.format, output=args.output)


def _cache(args: argparse.Namespace) -> int:
    import shutil

    from .backends.numba_cpu import cache_dir
    from .backends.numba_cpu.cache import cache_enabled, kernel_dir
    root = cache_dir()
    if args.action == "clear":
        # only the per-toolchain folders fusegrad made: the root may be a folder of the user's
        removed = [d for d in root.glob("fusegrad*") if d.is_dir()] if root.exists() else []
        for d in removed:
            shutil.rmtree(d)
        print(f"cleared {len(removed)} cache folder(s) in {root}")
        return 0
    files = [f for f in root.rglob("*") if f.is_file()] if root.exists() else []
    kernels = [f for f in files if f.suffix == ".py" and f.name.startswith("k_")]
    programs = [f for f in files if f.suffix == ".json" and f.name.startswith("p_")]
    size = sum(f.stat().st_size for f in files)
    print(f"location: {root}{'' if cache_enabled() else ' (disabled by FUSEGRAD_CACHE=0)'}")
    print(f"this build's folder: {kernel_dir()}")
    print(f"entries: {len(kernels)} kernels, {len(programs)} programs in {len(files)} files")
    print(f"size: {size / 1e6:.2f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusegrad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the guide's MLP on built-in synthetic data")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", choices=["numba_cpu", "interpreter"], default=None)
    t.add_argument("--compile", action="store_true",
                   help="trace the step once with fusegrad.compile and replay it")
    t.set_defaults(func=_train)
    d = sub.add_parser("dump", help="print a model's forward or training step at every "
                       "compiler stage (default: the demo training step)")
    d.add_argument("target", nargs="?", default=None,
                   help="a zoo workload (fusegrad/bench/zoo.py, small shapes) or "
                   "path/to/file.py:function returning (model, inputs) or (model, inputs, "
                   "loss_fn, optimizer[, target]); default: the demo training step")
    d.add_argument("--train", action="store_true",
                   help="dump the training step (loss, backward, optimizer update), not the forward")
    d.add_argument("--batch", type=int, default=64, help="batch of the demo step (no TARGET)")
    d.add_argument("--stage", action="append",
                   choices=["traced", "passes", "schedule", "source", "summary"],
                   help="stages to print, repeatable (default: all)")
    d.add_argument("--format", choices=["text", "json", "dot", "svg"], default="text",
                   help="json: docs/dump-schema.md; svg needs Graphviz's dot")
    d.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    d.set_defaults(func=_dump)
    c = sub.add_parser("cache", help="the on-disk kernel cache: where it is, how big; clear it")
    c.add_argument("action", choices=["info", "clear"])
    c.set_defaults(func=_cache)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
