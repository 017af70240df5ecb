"""One benchmark worker process: one library, one workload, driven over stdin/stdout.

``python -m fusegrad.bench.worker`` reads one JSON command per line and answers each with one
JSON line on the original standard output (everything else the libraries print goes to
stderr). Running each library in its own process keeps their thread pools and allocators from
fighting, and lets the harness interleave them step by step.

Commands: ``setup`` (build the workload: ``variant``, ``workload``, ``small``, ``seed``,
``threads``, ``load_weights``/``save_weights`` as ``.npz``), ``steps`` (``n`` training steps:
each step's loss and wall time), ``infer`` (``n`` forward passes under no_grad: their times),
``info`` (peak RSS, kernels, extern calls and FLOPs of one step) and ``quit``.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

import numpy as np

VARIANTS = ("fusegrad_compiled", "fusegrad_eager", "fusegrad_interpreter", "torch_eager",
            "torch_compile")


class Runner:
    """Builds one workload in one library and runs its training step or its forward."""

    def __init__(self, cmd: dict[str, Any]):
        from . import zoo
        self.variant = cmd["variant"]
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}")
        self.is_torch = self.variant.startswith("torch")
        threads = cmd.get("threads")
        if self.is_torch:
            import torch
            if threads:
                torch.set_num_threads(threads)
            if cmd.get("flush_denormal"):
                torch.set_flush_denormal(True)
            self.lib = torch
        else:
            import fusegrad
            if self.variant == "fusegrad_interpreter":
                fusegrad.set_backend("interpreter")
            self.lib = fusegrad
        self.built = zoo.build(cmd["workload"], self.lib, cmd.get("small", False),
                               cmd.get("seed", 0))
        if cmd.get("save_weights"):
            state = {k: v.detach().cpu().numpy() for k, v in self.built.model.state_dict().items()}
            np.savez(cmd["save_weights"], **state)
        if cmd.get("load_weights"):
            with np.load(cmd["load_weights"]) as f:
                self.built.model.load_state_dict({k: self.lib.tensor(f[k].copy()) for k in f})
        self.step = self.built.step
        self.forward = self.built.forward
        if self.variant == "fusegrad_compiled":
            self.step = self.lib.compile(self.built.step)
            self.forward = self.lib.compile(self.built.forward)
        elif self.variant == "torch_compile":
            self.built.model = self.lib.compile(self.built.model)

    def steps(self, n: int) -> dict[str, list[float]]:
        losses, times = [], []
        for _ in range(n):
            if not self.is_torch:
                from ..tracer.realize import STATS
                self._runs_before_step = STATS.runs
            start = time.perf_counter()
            loss = self.step().item()   # reading the loss realizes the whole step
            times.append(time.perf_counter() - start)
            losses.append(loss)
        return {"losses": losses, "times": times}

    def infer(self, n: int) -> dict[str, list[float]]:
        times = []
        with self.lib.no_grad():
            for _ in range(n):
                start = time.perf_counter()
                out = self.forward()
                if not self.is_torch:
                    self.lib.realize(out)
                times.append(time.perf_counter() - start)
        return {"times": times}

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if not self.is_torch:
            reports = self._step_reports()
            if reports:
                from ..ir.flops import count_flops
                facts.update(kernels=sum(r.kernel_count for r in reports),
                             externs=sum(r.extern_count for r in reports),
                             flops=sum(count_flops(r.traced.outputs) for r in reports))
        return facts

    def _step_reports(self) -> list[Any]:
        """The compile reports of the programs that ran the last training step (uncompiled: its
        forward and backward, then the optimizer's replayed update)."""
        if self.variant == "fusegrad_compiled":
            return [e.program_entry.compiled.report for entries in self.step.entries.values()
                    for e in entries if e.program_entry is not None][:1]
        from ..tracer.realize import STATS
        before = getattr(self, "_runs_before_step", None)
        ran = STATS.ran_since(before) if before is not None else []
        return [e.compiled.report for e in {id(e): e for e in ran}.values()]


def serve(stdin: Any, reply_fd: int) -> None:
    """Answer commands from ``stdin`` on ``reply_fd`` until ``quit`` or end of input."""
    runner: Runner | None = None
    with os.fdopen(reply_fd, "w", buffering=1) as out:
        for line in stdin:
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "quit":
                    break
                if cmd["cmd"] == "setup":
                    runner = Runner(cmd)
                    answer: dict[str, Any] = {"ok": True}
                elif runner is None:
                    raise RuntimeError("setup must come first")
                elif cmd["cmd"] == "steps":
                    answer = runner.steps(cmd["n"])
                elif cmd["cmd"] == "infer":
                    answer = runner.infer(cmd["n"])
                elif cmd["cmd"] == "info":
                    answer = runner.info()
                else:
                    raise ValueError(f"unknown command {cmd['cmd']!r}")
            except Exception as e:  # noqa: BLE001 - reported to the harness, which shows it
                answer = {"error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(answer) + "\n")


def main() -> None:
    reply_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints must not break replies
    serve(sys.stdin, reply_fd)


if __name__ == "__main__":
    main()
