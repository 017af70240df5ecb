"""``fusegrad`` command line: ``train`` (the demo), ``dump`` (every compiler stage), ``bench``
(the model zoo beside PyTorch), ``cache``."""
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


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench import harness, report, zoo
    names = args.names or list(zoo.WORKLOADS)
    unknown = harness.unknown_workloads(names)
    if unknown:
        print(f"fusegrad bench: unknown workload(s) {', '.join(unknown)}; the zoo has: "
              f"{', '.join(zoo.WORKLOADS)}", file=sys.stderr)
        return 2
    if not args.gap >= 0:
        print(f"fusegrad bench: --gap must be a number of seconds >= 0, got {args.gap}",
              file=sys.stderr)
        return 2
    settings = harness.Settings(
        workloads=names, warmup=args.warmup, round_warmup=args.round_warmup,
        rounds=args.rounds, steps=args.steps,
        threads=args.threads, torch_compile=args.torch_compile, inference=args.inference,
        first_step=not args.no_first_step, small=args.small, gap=args.gap,
        torch_flush_denormal=args.torch_flush_denormal)
    results = harness.run(settings, show_progress=not args.quiet)
    print(report.table(results, settings))
    data = report.as_json(results, settings)
    if args.json:
        report.write_json(Path(args.json), data)
    if args.csv:
        report.write_csv(Path(args.csv), data)
    if args.plot:
        report.plot(Path(args.plot), data)
    return 0 if all(r.check_passed for r in results) else 1


def _cache(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from .backends.numba_cpu import cache_dir, eviction
    from .backends.numba_cpu.cache import cache_enabled, kernel_dir
    root = cache_dir()
    if args.action == "clear":
        # only the per-toolchain folders fusegrad made: the root may be a folder of the user's
        removed = eviction.toolchain_folders(root)
        for d in removed:
            shutil.rmtree(d)
        print(f"cleared {len(removed)} cache folder(s) in {root}")
        return 0
    entries = eviction.scan(root)
    kinds = [e.kind for e in entries]
    size = sum(e.size for e in entries)
    print(f"location: {root}{'' if cache_enabled() else ' (disabled by FUSEGRAD_CACHE=0)'}")
    print(f"this build's folder: {kernel_dir()}")
    print(f"entries: {kinds.count('kernel')} kernels, {kinds.count('program')} programs in "
          f"{sum(len(e.files) for e in entries)} files")
    print(f"size: {size / 1e6:.2f} MB of {eviction.max_bytes() / 1e6:g} MB "
          f"({100 * size / eviction.max_bytes():.0f}%; FUSEGRAD_CACHE_MAX_MB, least recently used "
          "entries are evicted past it)")
    tests = Path(__file__).resolve().parents[1] / ".fusegrad-cache"   # set by tests/conftest.py
    if tests.is_dir():
        same = tests.resolve() == root.expanduser().resolve()
        tests_size = size if same else sum(e.size for e in eviction.scan(tests))
        print(f"test suite's cache: {tests} ({tests_size / 1e6:.2f} MB"
              f"{', this one' if same else ''})")
    return 0


def _zoo_names() -> list[str]:
    from .bench.zoo import WORKLOADS
    return list(WORKLOADS)


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
    b = sub.add_parser("bench", help="time the model zoo's training steps beside PyTorch")
    b.add_argument("names", nargs="*", help="workloads (default: all): " +
                   ", ".join(_zoo_names()))
    b.add_argument("--warmup", type=int, default=5, help="warm-up steps per variant")
    b.add_argument("--round-warmup", type=int, default=2,
                   help="untimed steps of each variant at the start of every round")
    b.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    b.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    b.add_argument("--gap", type=float, default=0.2, metavar="SECONDS",
                   help="idle time before each variant's turn, so that the previous worker's "
                        "spinning BLAS/OpenMP threads are asleep when timing starts")
    b.add_argument("--threads", type=int, default=None,
                   help="threads for every library (torch, OpenBLAS, Numba)")
    b.add_argument("--torch-compile", action="store_true",
                   help="also time torch.compile (costs ~10 s of compiling per workload)")
    b.add_argument("--torch-flush-denormal", action="store_true",
                   help="run torch with torch.set_flush_denormal(True), as fusegrad's programs "
                        "run by default (without it, attn's torch step slows down 7x within "
                        "60 steps as Adam's state goes denormal)")
    b.add_argument("--inference", action="store_true", help="also time the forward alone")
    b.add_argument("--no-first-step", action="store_true",
                   help="skip the cold/warm time-to-first-step runs in fresh processes")
    b.add_argument("--small", action="store_true", help="test-sized shapes of the same models")
    b.add_argument("--json", metavar="FILE", help="write every number as JSON")
    b.add_argument("--csv", metavar="FILE", help="write one row per workload and variant")
    b.add_argument("--plot", metavar="FILE.png",
                   help="draw the speedups (needs matplotlib: pip install 'fusegrad[plot]')")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_bench)
    c = sub.add_parser("cache", help="the on-disk kernel cache: where it is, how big; clear it")
    c.add_argument("action", choices=["info", "clear"])
    c.set_defaults(func=_cache)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
