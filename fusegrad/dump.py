"""Readable dumps of a compiled program: the traced graph, every pass, the fusion, the source."""
from __future__ import annotations

import json

from .backends.pipeline import CompileReport
from .ir.graph import Graph, format_graph, toposort

STAGES = ("summary", "traced", "passes", "schedule", "source")


def format_report(report: CompileReport, stages: list[str] | None = None) -> str:
    """Text of the chosen ``stages`` of one compilation (all by default)."""
    stages = list(stages or STAGES)
    out: list[str] = []
    if "summary" in stages:
        out.append(summary(report))
    if "traced" in stages:
        out.append(format_graph(report.traced, "traced"))
    if "passes" in stages:
        for rec in report.passes:
            out.append(format_graph(rec.graph, f"after {rec.name}: {rec.nodes_before} -> "
                                    f"{rec.nodes_after} nodes in {rec.seconds * 1e3:.2f} ms"))
    if "schedule" in stages and report.schedule is not None:
        from .ir.schedule import format_schedule
        out.append("# schedule\n" + format_schedule(report.schedule))
    if "source" in stages and report.program is not None and hasattr(report.program, "sources"):
        for src in report.program.sources:
            out.append(f"# generated source of {src.name}\n{src.source}")
    return "\n\n".join(out)


def summary(report: CompileReport) -> str:
    lines = [f"# summary ({report.backend})", f"traced nodes: {len(report.traced)}"]
    for rec in report.passes:
        lines.append(f"pass {rec.name:<34} {rec.nodes_before:5d} -> {rec.nodes_after:5d} nodes "
                     f"{rec.seconds * 1e3:8.2f} ms")
    if report.schedule is not None:
        lines.append(f"kernels: {report.kernel_count}, extern calls: {report.extern_count}")
    for stage, sec in report.seconds.items():
        lines.append(f"time {stage:<20} {sec * 1e3:8.1f} ms")
    return "\n".join(lines)


def graph_json(graph: Graph) -> str:
    order = toposort(graph.outputs)
    ids = {n: i for i, n in enumerate(order)}
    return json.dumps({
        "nodes": [{"id": ids[n], "op": n.op, "shape": list(n.shape), "dtype": n.dtype,
                   "inputs": [ids[i] for i in n.inputs], "loc": n.loc,
                   "attrs": repr(n.attrs) if n.op != "buffer" else None} for n in order],
        "outputs": [ids[o] for o in graph.outputs],
    }, indent=1)


def graph_dot(graph: Graph) -> str:
    order = toposort(graph.outputs)
    ids = {n: i for i, n in enumerate(order)}
    lines = ["digraph fusegrad {", "  node [shape=box, fontname=monospace];"]
    for n in order:
        label = f"%{ids[n]} {n.op}\\n{n.type_str}"
        lines.append(f'  n{ids[n]} [label="{label}"];')
        lines.extend(f"  n{ids[i]} -> n{ids[n]};" for i in n.inputs)
    lines.append("}")
    return "\n".join(lines)


def dump_demo_step(batch: int = 64, stages: list[str] | None = None, fmt: str = "text") -> str:
    """Compile the demo MLP's steady-state training step and dump it."""
    from . import demo
    from .tracer import functions  # noqa: F401  (binds Tensor methods)
    from .tracer.creation import from_numpy
    from .tracer.realize import STATS
    import fusegrad as fg
    import fusegrad.nnlib as nn
    import fusegrad.optimlib as optim

    fg.manual_seed(0)
    model = demo.make_mlp()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step = demo.make_step(model, opt, nn.CrossEntropyLoss())
    for xb, yb in demo.synthetic_batches(2, batch):  # step 2 is the steady state
        step(from_numpy(xb), from_numpy(yb)).item()
    report = STATS.last_entry.compiled.report
    if fmt == "json":
        return graph_json(report.traced)
    if fmt == "dot":
        return graph_dot(report.traced)
    return format_report(report, stages)
