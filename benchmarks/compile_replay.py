"""Replay overhead of ``fusegrad.compile`` on the MLP training step, beside torch eager.

Times, in one run: the compiled step (replay), the same step uncompiled (lazy tracing every
call), the program alone (``program.run`` on the step's inputs: the kernels plus the generated
loop that calls them) and torch eager. The overhead of replay is its time above the program's.

    python benchmarks/compile_replay.py [--batch 64] [--steps 300]
"""
from __future__ import annotations

import argparse
import statistics
import time

import fusegrad as fg
import fusegrad.nnlib as nn
import fusegrad.optimlib as optim
from fusegrad import demo


def make(compiled: bool):
    fg.manual_seed(0)
    model = demo.make_mlp()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    return fg.compile(step) if compiled else step


def time_steps(step, batches, warmup: int) -> list[float]:
    times = []
    xs = [(fg.from_numpy(x), fg.from_numpy(y)) for x, y in batches]
    for x, y in xs:
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    xs[-1][0].numpy()
    return times[warmup:]


def time_program(batches, reps: int) -> float:
    from fusegrad.tracer.realize import STATS
    entry = STATS.last_entry
    program = entry.compiled.program
    leaves = [None] * len(entry.slots)
    compiled_entry = _last_compiled_entry
    inputs = []
    for slot in compiled_entry.slots:
        if slot.kind == "const":
            inputs.append(slot.ref.data)
        elif slot.kind == "state":
            inputs.append(slot.ref().node.attrs[0].data)
        elif slot.kind == "arg":
            x, y = batches[0]
            inputs.append((x if slot.ref == 0 else y).reshape(-1))
        else:
            inputs.append(fg.tracer.rng.next_key(slot.ref))
    del leaves
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        program.run(inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_program_inside_replay(compiled, batches, warmup: int) -> tuple[float, float]:
    """Median time of ``program.run`` within replayed steps, and the median share of each step
    spent outside it (signature, gathering inputs, rebinding outputs)."""
    entry = next(iter(compiled.entries.values()))[-1]
    program = entry.program_entry.compiled.program
    run = program.run
    inside: list[float] = []

    def timed(inputs):
        t0 = time.perf_counter()
        out = run(inputs)
        inside.append(time.perf_counter() - t0)
        return out

    program.run = timed
    try:
        steps = time_steps(compiled, batches, 0)
    finally:
        program.run = run
    shares = [(s - i) / s for s, i in zip(steps[warmup:], inside[warmup:])]
    return statistics.median(inside[warmup:]), statistics.median(shares)


def torch_steps(batches, warmup: int) -> list[float]:
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    times = []
    for x, y in xs:
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[warmup:]


_last_compiled_entry = None


def main() -> None:
    global _last_compiled_entry
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()
    batches = demo.synthetic_batches(args.steps, args.batch)
    lazy = statistics.median(time_steps(make(False), batches, args.warmup))
    compiled = make(True)
    replay = statistics.median(time_steps(compiled, batches, args.warmup))
    _last_compiled_entry = next(iter(compiled.entries.values()))[-1]
    program = time_program(batches, args.steps)
    in_step = time_program_inside_replay(compiled, batches, args.warmup)
    th = statistics.median(torch_steps(batches, args.warmup))
    print(f"MLP 784-256-10 training step, batch {args.batch} (medians of "
          f"{args.steps - args.warmup} steps)")
    print(f"  program alone (kernels + call loop): {program * 1e3:8.3f} ms")
    print(f"  program inside the replayed steps:  {in_step[0] * 1e3:8.3f} ms")
    print(f"  fusegrad.compile replay:            {replay * 1e3:8.3f} ms  "
          f"(overhead {100 * (replay - program) / replay:.1f}% of the step above the program "
          f"alone; {100 * in_step[1]:.1f}% above the program inside the same steps)")
    print(f"  fusegrad uncompiled (lazy tracing): {lazy * 1e3:8.3f} ms")
    print(f"  torch eager:                        {th * 1e3:8.3f} ms")
    print(f"  replay speed-up vs torch eager: {th / replay:.2f}x")


if __name__ == "__main__":
    main()
