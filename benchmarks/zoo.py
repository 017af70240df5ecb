"""Training steps of the guide's models in fusegrad (eager and compiled) beside torch eager.

Each model trains with SGD (momentum 0.9) on fixed random batches; the script prints, per model,
the kernels and extern calls of the compiled step and median step times measured in one run.

    python benchmarks/zoo.py [--steps 60] [--warmup 10] [--only cnn,lstm,mha,mlp]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def models(lib):
    nn = lib.nn if hasattr(lib, "nn") and lib.__name__ == "torch" else __import__(
        "fusegrad.nnlib", fromlist=["x"])

    class Mha(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(64, 4, batch_first=True)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.att(x, x, x, need_weights=False)[0].mean(1))

    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(32, 64, num_layers=2, batch_first=True)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    return {
        "mlp": (lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
                (64, 784)),
        "cnn": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)),
                (32, 3, 16, 16)),
        "lstm": (Lstm, (16, 16, 32)),
        "mha": (Mha, (8, 16, 64)),
    }


def run_torch(name, batches, warmup):
    import torch
    torch.manual_seed(0)
    make, _ = models(torch)[name]
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for x, y in batches:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:])


def run_fusegrad(name, batches, warmup, compiled):
    import fusegrad as fg
    from fusegrad import demo
    from fusegrad.tracer.realize import STATS
    fg.manual_seed(0)
    make, _ = models(fg)[name]
    model = make()
    opt = fg.optimlib.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = demo.make_step(model, opt, fg.nnlib.CrossEntropyLoss())
    fn = fg.compile(step) if compiled else step
    times = []
    for x, y in batches:
        x, y = fg.from_numpy(x), fg.from_numpy(y)
        t0 = time.perf_counter()
        fn(x, y).item()
        times.append(time.perf_counter() - t0)
    report = STATS.last_entry.compiled.report
    return statistics.median(times[warmup:]), report.kernel_count, report.extern_count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--only", default="mlp,cnn,lstm,mha")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'model':6} {'kernels':>8} {'externs':>8} {'fg eager':>10} {'fg compiled':>12} "
          f"{'torch':>9} {'compiled/torch':>15}")
    for name in args.only.split(","):
        shape = models(__import__("torch"))[name][1]
        batches = [(rng.standard_normal(shape).astype(np.float32),
                    rng.integers(0, 10, shape[0]).astype(np.int64)) for _ in range(args.steps)]
        eager, _, _ = run_fusegrad(name, batches, args.warmup, compiled=False)
        comp, kernels, externs = run_fusegrad(name, batches, args.warmup, compiled=True)
        th = run_torch(name, batches, args.warmup)
        print(f"{name:6} {kernels:8d} {externs:8d} {eager * 1e3:8.2f}ms {comp * 1e3:10.2f}ms "
              f"{th * 1e3:7.2f}ms {th / comp:14.2f}x")


if __name__ == "__main__":
    main()
