"""Readable dumps of a compiled program: the traced graph, every pass, the fusion, the source."""
from __future__ import annotations

import json

from .backends.pipeline import CompileReport, bypass_program_cache, full_report
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
    if report.from_disk:
        lines.append("loaded from the disk program cache: no passes or schedule in this process")
    for rec in report.passes:
        lines.append(f"pass {rec.name:<34} {rec.nodes_before:5d} -> {rec.nodes_after:5d} nodes "
                     f"{rec.seconds * 1e3:8.2f} ms")
    if report.schedule is not None or report.from_disk:
        lines.append(f"kernels: {report.kernel_count}, extern calls: {report.extern_count}")
    for stage, sec in report.seconds.items():
        lines.append(f"time {stage:<20} {sec * 1e3:8.1f} ms")
    for stage, sec in report.original_seconds.items():
        lines.append(f"time {stage:<20} {sec * 1e3:8.1f} ms (when first compiled)")
    return "\n".join(lines)


def to_networkx(graph: Graph) -> "networkx.DiGraph":
    """The graph as a networkx DiGraph: nodes ``%i`` with op, type and source line; edges from
    inputs to users (in input order)."""
    import networkx
    order = toposort(graph.outputs)
    ids = {n: i for i, n in enumerate(order)}
    outputs = {ids[o] for o in graph.outputs}
    g = networkx.DiGraph()
    for n in order:
        g.add_node(f"%{ids[n]}", op=n.op, type=n.type_str, loc=n.loc or "",
                   attrs="" if n.op == "buffer" else repr(n.attrs), output=ids[n] in outputs)
        for pos, i in enumerate(n.inputs):
            g.add_edge(f"%{ids[i]}", f"%{ids[n]}", position=pos)
    return g


def graph_json(graph: Graph) -> str:
    """networkx's node-link JSON of the graph."""
    import networkx
    return json.dumps(networkx.node_link_data(to_networkx(graph), edges="edges"), indent=1)


def graph_dot(graph: Graph) -> str:
    """Graphviz DOT text of the graph (render with ``dot -Tsvg``)."""
    g = to_networkx(graph)
    lines = ["digraph fusegrad {", "  node [shape=box, fontname=monospace];"]
    for name, data in g.nodes(data=True):
        label = f"{name} {data['op']}\\n{data['type']}"
        style = ", style=bold" if data["output"] else ""
        lines.append(f'  "{name}" [label="{label}"{style}];')
    lines.extend(f'  "{u}" -> "{v}";' for u, v in g.edges())
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
    with bypass_program_cache():  # a dump shows every stage: compile, never load from disk
        for xb, yb in demo.synthetic_batches(2, batch):  # step 2 is the steady state
            step(from_numpy(xb), from_numpy(yb)).item()
        report = full_report(STATS.last_entry.compiled.report)
    if fmt == "json":
        return graph_json(report.traced)
    if fmt == "dot":
        return graph_dot(report.traced)
    return format_report(report, stages)
