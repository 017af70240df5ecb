"""Readable dumps of a compiled program: the traced graph, every pass, the fusion, the source.

:func:`capture` runs a :class:`~fusegrad.dump_target.Target` twice and keeps the report of the
second (steady-state) call's program, compiled through every stage. :func:`stage_records` gives
each stage's counts and time, :func:`format_text` the text dump. JSON, DOT and SVG are in
``dump_export.py``; :func:`dump_command` is ``fusegrad dump``.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .backends.numba_cpu.program import concat_lines
from .backends.numba_cpu.program_assigns import assign_lines
from .backends.pipeline import CompileReport, bypass_program_cache, full_report
from .dump_target import Target, TargetError, run_step
from .ir.graph import Graph, format_graph
from .ir.schedule import format_schedule

STAGES = ("summary", "traced", "passes", "schedule", "source")
FORMATS = ("text", "json", "dot", "svg")


@dataclass
class Dump:
    """One program to dump: ``report`` has every stage; ``trace_seconds`` is the wall time of the
    call that produced it (the step's Python, plus running its already compiled program)."""

    target: str
    report: CompileReport
    trace_seconds: float
    others: list[str] = field(default_factory=list)  # the other programs the call ran


@dataclass
class StageRecord:
    """What one stage made: the graph's node count after it, how many ops it turned into
    constants (constfold: ops before minus ops after, ``const`` and ``buffer`` leaves aside), kernels and extern calls (fusion), bytes of the program's
    intermediate buffers with and without reuse (codegen), and its time. None: not applicable."""

    name: str
    made_by: str   # "tracer", "pass", "fusion" or "codegen"
    seconds: float
    nodes: int | None = None
    nodes_before: int | None = None
    folded: int | None = None
    kernels: int | None = None
    externs: int | None = None
    buffer_bytes: int | None = None
    buffer_bytes_no_reuse: int | None = None


def capture(target: Target) -> Dump:
    """Run ``target`` twice (the second call is the steady state: optimizer state exists, grads
    are zeroed) and report the largest program the second call ran, compiled through every
    stage (never loaded from the disk program cache). The optimizer's update is traced with the
    forward and backward, as ``fusegrad.compile`` traces a step (see ``eager_updates``).

    Raises:
        TargetError: running the target failed, or its second call computed nothing.
    """
    from .optimlib.optimizer import eager_updates
    from .tracer.realize import STATS
    with bypass_program_cache(), eager_updates():
        run_step(target)
        before = STATS.runs
        start = time.perf_counter()
        run_step(target)
        seconds = time.perf_counter() - start
    ran = STATS.ran_since(before)
    if not ran:
        raise TargetError(f"{target.label}: the call computed nothing (no tensor was realized); "
                          "the model must return tensors computed from its inputs.")
    # the optimizer's update is traced with the rest (an uncompiled step otherwise replays it as
    # a second program), so a training step is one program; the largest is dumped if there are
    # more (the user's step realized values in between), the others are named in the summary
    shown = largest_program(ran)
    others = [f"{len(e.compiled.report.traced)} traced nodes, {_kernels(e.compiled.report)}"
              for e in {id(e): e for e in ran}.values() if e is not shown]
    return Dump(target.label, full_report(shown.compiled.report), seconds, others)


def largest_program(ran: list[Any]) -> Any:
    """Of the program entries a call ran, the one with the largest traced graph."""
    return max(ran, key=lambda e: len(e.compiled.report.traced))


def _kernels(report: CompileReport) -> str:
    return f"{report.kernel_count} kernels, {report.extern_count} extern calls"


def optimized_graph(report: CompileReport) -> Graph:
    """The graph fusion received: the last pass's output (the traced graph if no pass ran)."""
    return report.passes[-1].graph if report.passes else report.traced


def stage_records(dump: Dump) -> list[StageRecord]:
    """One record per stage, in the order they ran: traced, each pass, fusion, codegen."""
    report = dump.report
    records = [StageRecord("traced", "tracer", dump.trace_seconds, nodes=len(report.traced))]
    before = report.traced
    for rec in report.passes:
        folded = None
        if rec.name == "constfold":  # ops it replaced by constants (or dropped with them)
            folded = _ops(before) - _ops(rec.graph)
        records.append(StageRecord(rec.name, "pass", rec.seconds, nodes=rec.nodes_after,
                                   nodes_before=rec.nodes_before, folded=folded))
        before = rec.graph
    if report.schedule is not None:
        records.append(StageRecord("fusion", "fusion", report.seconds["fusion"],
                                   kernels=report.kernel_count, externs=report.extern_count))
        plan = report.program.plan
        records.append(StageRecord("codegen+compile", "codegen", report.seconds["codegen+compile"],
                                   buffer_bytes=plan.total_bytes,
                                   buffer_bytes_no_reuse=plan.no_reuse_bytes))
    return records


def _ops(graph: Graph) -> int:
    return sum(1 for n in graph.nodes if n.op not in ("const", "buffer"))


def summary_totals(dump: Dump) -> dict[str, int | float | None]:
    """The whole compilation in numbers (the ``summary`` object of the JSON dump)."""
    records = stage_records(dump)
    compiled = dump.report.schedule is not None
    codegen = records[-1] if compiled else None
    return {
        "traced_nodes": records[0].nodes,
        "optimized_nodes": len(optimized_graph(dump.report)),
        "constants_folded": sum(r.folded or 0 for r in records),
        "kernels": dump.report.kernel_count if compiled else None,
        "extern_calls": dump.report.extern_count if compiled else None,
        "intermediate_bytes": codegen.buffer_bytes if codegen else None,
        "intermediate_bytes_without_reuse": codegen.buffer_bytes_no_reuse if codegen else None,
        "compile_seconds": sum(r.seconds for r in records[1:]),
    }


# ----------------------------------------------------------------------------- text
def summary(dump: Dump) -> str:
    """One row per stage (nodes, constants folded, kernels, extern calls, intermediate buffer
    bytes, time), then the totals."""
    report = dump.report
    lines = [f"# summary ({report.backend}): {dump.target}",
             f"{'stage':<16} {'made by':<8} {'nodes':>13} {'folded':>6} {'kernels':>7} "
             f"{'externs':>7} {'buffer bytes':>12} {'time':>11}"]

    def cell(value: int | None, width: int) -> str:
        return f"{'-' if value is None else value:>{width}}"

    for r in stage_records(dump):
        nodes = "" if r.nodes is None else str(r.nodes)
        if r.nodes_before is not None:
            nodes = f"{r.nodes_before} -> {nodes}"
        lines.append(f"{r.name:<16} {r.made_by:<8} {nodes or '-':>13} {cell(r.folded, 6)} "
                     f"{cell(r.kernels, 7)} {cell(r.externs, 7)} {cell(r.buffer_bytes, 12)} "
                     f"{r.seconds * 1e3:8.2f} ms")
    totals = summary_totals(dump)
    if report.schedule is None:
        lines.append("the interpreter runs the traced graph: no passes, fusion or code generation")
    else:
        lines.append(
            f"total: {totals['traced_nodes']} -> {totals['optimized_nodes']} nodes, "
            f"{totals['constants_folded']} constants folded, {totals['kernels']} kernels, "
            f"{totals['extern_calls']} extern calls, {totals['intermediate_bytes']} bytes of "
            f"intermediate buffers ({totals['intermediate_bytes_without_reuse']} without reuse), "
            f"compiled in {totals['compile_seconds'] * 1e3:.1f} ms")
    lines.append(f"traced: the call's wall time ({dump.trace_seconds * 1e3:.2f} ms) covers the "
                 "step's Python and the run of its program")
    for other in dump.others:
        lines.append(f"the call also ran another program (not shown): {other}")
    return "\n".join(lines)


def expanded_note(keyed: Graph) -> str:
    """What the traced graph expanded from the graph as keyed: its macro calls (``ir/macro.py``)
    and deferred gradients, or nothing when it has neither."""
    calls = Counter(kind for kind, _, _ in {(n.attrs[0], n.attrs[1], n.inputs)
                                            for n in keyed.nodes if n.op == "macro"})
    grads = sum(n.op == "grad" for n in keyed.nodes)
    if not calls and not grads:
        return ""
    parts = [f"{k} macro call(s) of {kind!r}" for kind, k in sorted(calls.items())]
    if grads:
        parts.append(f"{grads} deferred gradient(s)")
    return f"; expanded from the {len(keyed.nodes)} nodes keyed: {', '.join(parts)}"


def format_text(dump: Dump, stages: list[str] | None = None) -> str:
    """The text of the chosen ``stages`` (all by default), each headed by what made it and the
    time it took."""
    stages = list(stages or STAGES)
    report = dump.report
    out: list[str] = []
    if "summary" in stages:
        out.append(summary(dump))
    if "traced" in stages:
        out.append(format_graph(report.traced, f"traced: made by the tracer in "
                                f"{dump.trace_seconds * 1e3:.2f} ms (the whole call)"
                                + expanded_note(report.keyed)))
    if "passes" in stages:
        for rec in report.passes:
            out.append(format_graph(rec.graph, f"after {rec.name}: {rec.nodes_before} -> "
                                    f"{rec.nodes_after} nodes in {rec.seconds * 1e3:.2f} ms"))
    compiled = report.schedule is not None
    if "schedule" in stages:
        out.append(f"# schedule: made by fusion in {report.seconds['fusion'] * 1e3:.2f} ms\n"
                   + format_schedule(report.schedule) if compiled else
                   "# schedule: none (the interpreter backend runs the traced graph)")
    if "source" in stages:
        if compiled:
            out.append(f"# generated source: made by codegen+compile in "
                       f"{report.seconds['codegen+compile'] * 1e3:.1f} ms for "
                       f"{report.kernel_count} kernels")
            out.extend(f"# generated source of {src.name}\n{src.source}"
                       for src in report.program.sources)
            assigns = assign_lines(report.program.assigns, report.program.names)
            if assigns:
                out.append("# assigns: planned by codegen (in place, or copied at the end of "
                           "the run)\n" + "\n".join(assigns))
            concats = concat_lines(report.schedule, report.program.plan)
            if concats:
                out.append("# concatenations: placed by the buffer plan (each piece a slice of "
                           "the result's block)\n" + "\n".join(concats))
        else:
            out.append("# generated source: none (the interpreter backend generates no code)")
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- the command
def render(dump: Dump, stages: list[str] | None, fmt: str) -> str:
    """The dump in ``fmt`` (text, json or dot; svg is DOT rendered by :func:`dump_command`)."""
    from . import dump_export
    if fmt == "json":
        return dump_export.to_json(dump, stages)
    if fmt in ("dot", "svg"):
        return dump_export.to_dot(dump, stages)
    return format_text(dump, stages)


def dump_command(target: str | None, *, train: bool = False, batch: int = 64,
                 stages: list[str] | None = None, fmt: str = "text",
                 output: str | None = None) -> int:
    """``fusegrad dump``: write the dump to ``output`` (stdout if None); the exit status.

    Returns 0, 2 for a bad TARGET (one paragraph on stderr), 1 for SVG without Graphviz (the
    DOT text is written instead, to ``output`` with a ``.dot`` suffix, and stderr says how to
    install Graphviz).
    """
    from . import dump_export
    from .dump_target import demo_target, load_target
    try:
        chosen = demo_target(batch) if target is None else load_target(target, train)
        text = render(capture(chosen), stages, fmt)
    except TargetError as e:
        print(f"fusegrad dump: {e}", file=sys.stderr)
        return 2
    status = 0
    if fmt == "svg":
        try:
            text = dump_export.dot_to_svg(text)
        except dump_export.GraphvizMissing as e:
            output = dump_export.dot_path(output)
            print(f"fusegrad dump: {e} The DOT text was written to "
                  f"{output or 'stdout'} instead.", file=sys.stderr)
            status = 1
    if output is None:
        print(text)
    else:
        with open(output, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    return status
