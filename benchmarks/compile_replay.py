"""Replay overhead of ``fusegrad.compile`` on the MLP training step, beside torch eager.

Times, in one run and interleaved in rounds (the machines are shared and noisy):

- the compiled step (replay) and the same step uncompiled (lazy tracing every call);
- the same replayed steps again with a clock reading after every kernel and matmul of the
  program (``timed_run``): the sum of the kernels' times inside real steps, the program's run
  (kernels plus the generated loop that calls them) and the step around them;
- torch eager.

The overhead of replay is the step's time above its kernels' sum, as a share of the step.

    python benchmarks/compile_replay.py [--batch 64] [--steps 100] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad import demo
from fusegrad.backends.numba_cpu.program import timed_run


def make(compiled: bool):
    fg.manual_seed(0)
    model = demo.make_mlp()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    return fg.compile(step) if compiled else step


def time_steps(step, xs) -> list[float]:
    times = []
    for x, y in xs:
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return times


def torch_step():
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    return demo.make_step(model, opt, torch.nn.CrossEntropyLoss())  # the same Python step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100, help="steps per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import torch
    batches = demo.synthetic_batches(args.steps, args.batch)
    fg_xs = [(fg.from_numpy(x), fg.from_numpy(y)) for x, y in batches]
    th_xs = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    lazy, compiled, th = make(False), make(True), torch_step()
    for step, xs in ((lazy, fg_xs), (compiled, fg_xs), (th, th_xs)):
        time_steps(step, xs[:20])  # warm up: compile, load, first-touch memory
    program = next(iter(compiled.entries.values()))[-1].program_entry.compiled.program
    plain_run = program.run
    timed, stamps = timed_run(program)

    t = {"lazy": [], "replay": [], "torch": [], "timed step": [], "run": [], "kernels": []}
    for _ in range(args.rounds):
        t["torch"] += time_steps(th, th_xs)
        t["lazy"] += time_steps(lazy, fg_xs)
        t["replay"] += time_steps(compiled, fg_xs)
        program.run = timed
        stamps.clear()
        t["timed step"] += time_steps(compiled, fg_xs)
        program.run = plain_run
        for s in stamps:
            t["run"].append(s[-1] - s[0])
            t["kernels"].append(sum(b - a for a, b in zip(s[1:-1:2], s[2:-1:2])))
    med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    items = (len(stamps[0]) - 2) // 2
    print(f"MLP 784-256-10 training step, batch {args.batch}: medians of "
          f"{args.rounds} rounds x {args.steps} steps, interleaved")
    print(f"  torch eager:                           {med['torch']:7.3f} ms")
    print(f"  fusegrad uncompiled (lazy tracing):    {med['lazy']:7.3f} ms")
    print(f"  fusegrad.compile replay:               {med['replay']:7.3f} ms  "
          f"({med['torch'] / med['replay']:.2f}x torch eager)")
    print(f"  replayed with a clock around each of its {items} kernels and matmuls:")
    print(f"    step                                 {med['timed step']:7.3f} ms")
    print(f"    program run (kernels + call loop)    {med['run']:7.3f} ms")
    print(f"    kernels and matmuls, summed          {med['kernels']:7.3f} ms")
    over = (med["timed step"] - med["kernels"]) / med["timed step"]
    python = (med["timed step"] - med["run"]) / med["timed step"]
    print(f"  overhead above the kernels: {100 * over:.1f}% of the step "
          f"(Python around the program: {100 * python:.1f}%; the program's call loop: "
          f"{100 * (over - python):.1f}%)")


if __name__ == "__main__":
    main()
