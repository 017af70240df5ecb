"""``fusegrad.explain``: what a compiled function holds, in words."""
from __future__ import annotations

from typing import Any

from ..backends.pipeline import full_report


def describe(fn: Any) -> str:
    """What each compiled signature of ``fn`` (a CompiledFunction) holds: ops, passes, kernels,
    buffers, times, hits."""
    from ..backends.numba_cpu import STATS as KSTATS
    lines = [f"fusegrad.compile({fn._label}): "
             f"{fn.entry_count} signature(s), {fn.hits} replays (cache hits), "
             f"{fn.misses} traces (misses)"]
    for entries in fn.entries.values():
        for e in entries:
            lines.append(describe_entry(e))
    by_workers = (f" ({KSTATS.kernels_by_workers} of them compiled by compile workers)"
                  if KSTATS.kernels_by_workers else "")
    lines.append(f"kernels this process: {KSTATS.kernels_compiled} compiled, "
                 f"{KSTATS.kernels_loaded} loaded from the disk cache{by_workers}")
    return "\n".join(lines)


def describe_entry(e: Any) -> str:
    """One compiled entry (a CompiledEntry): its passes, kernels, inputs, times and replay."""
    shapes = ", ".join(f"{list(s)} {d}" for s, d, _ in e.signature[1])
    out = [f"- signature ({shapes}): traced in {e.trace_seconds * 1e3:.1f} ms, "
           f"replayed {e.replays} times",
           f"  ops traced: {e.traced_ops}"]
    if e.program_entry is None:
        return "\n".join(out + ["  (nothing to compute)"])
    report = e.program_entry.compiled.report
    # a program loaded from the disk cache ran no pass here: they are run again to be shown
    passes = full_report(report).passes if report.from_disk else report.passes
    for rec in passes:
        out.append(f"  pass {rec.name:<10} {rec.nodes_before:5d} -> {rec.nodes_after:5d} nodes")
    out.append(f"  kernels: {report.kernel_count}, extern calls: {report.extern_count}")
    plan = getattr(report.program, "plan", None)
    if plan is not None:
        out.append(f"  buffers: {plan.total_bytes} bytes")
    k = e.kinds
    out.append("  inputs: " + ", ".join(f"{k[kind]} {kind}" for kind in sorted(k) if kind in
                                        ("arg", "const", "grad", "rng", "state")) +
               f"; outputs: {k['assigns']} assigns, {k['new grads']} new grads, "
               f"{k['returned']} returned")
    for stage, sec in report.seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms")
    for stage, sec in report.original_seconds.items():
        out.append(f"  compile {stage:<18} {sec * 1e3:8.1f} ms (when first compiled)")
    out.append("  replay (generated Python run per call):")
    out.extend(f"    {line}" for line in e.replay_source.splitlines())
    return "\n".join(out)


def explain(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call ``fn`` (a compiled function) with ``args`` if given, then describe it."""
    if args or kwargs:
        fn(*args, **kwargs)
    return fn.explain()
