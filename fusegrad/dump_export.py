"""``fusegrad dump`` as data: JSON (schema below), Graphviz DOT built from it, SVG through ``dot``.

JSON document, version 3 (:data:`SCHEMA` is the same as a JSON Schema; ``docs/dump-schema.md``
explains every field)::

    {"schema": "fusegrad-dump", "version": 3, "target": str, "backend": str,
     "stages_shown": [stage, ...], "graph": "traced" | "optimized" | "fused" | null,
     "stages": [{"name", "made_by", "seconds", "nodes", "nodes_before", "folded", "kernels",
                 "externs", "buffer_bytes", "buffer_bytes_no_reuse"}, ...],
     "summary": {"traced_nodes", "optimized_nodes", "constants_folded", "kernels",
                 "extern_calls", "intermediate_bytes", "intermediate_bytes_without_reuse",
                 "compile_seconds"},
     "nodes": [{"id", "op", "type", "shape", "dtype", "attrs", "loc", "output", "made_by",
                "kernel"}, ...],
     "edges": [{"source", "target", "position"}, ...],
     "kernels": [{"name", "kind", "op", "shape", "reduce_axes", "writes", "reads", "body",
                  "notes", "decisions", "source"}, ...],
     "decisions": [{"kind", "rule", "message", "nodes", "refusals", "readers", "via"}, ...],
     "buffers": [{"node", "role", "type", "bytes", "block", "offset"}, ...],
     "provenance": [{"loc", "nodes"}, ...]}

``graph`` names the graph ``nodes``/``edges`` hold: ``fused`` (what the schedule computes: the
optimised graph after fusion's normalisation, numbered as the text schedule prints it) when the
schedule or the source is shown, else ``optimized`` (the last pass's output, numbered as the text
dump's ``after dce`` block) for the passes, else ``traced``; null for ``summary`` alone. Kernels,
fusion decisions and buffers are filled with the fused graph; each kernel's ``source`` only for
the source.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from typing import Any

from .dump import STAGES, Dump, optimized_graph, stage_records, summary_totals
from .ir.dtypes import to_numpy
from .ir.fusion_decisions import DecisionKind, FusionDecision, RefusalRule
from .ir.graph import toposort
from .ir.node import Node
from .ir.schedule import Extern, Kernel, Schedule, format_view, schedule_node_ids

SCHEMA_VERSION = 3

_INT = {"type": "integer", "minimum": 0}
_IDS = {"type": "array", "items": _INT}
_OPT_INT = {"type": ["integer", "null"], "minimum": 0}
_STR_OR_NULL = {"type": ["string", "null"]}
_NODE_OR_NULL = {"type": ["integer", "null"], "minimum": 0}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": sorted(props), "additionalProperties": False,
            "properties": props}


_DECISIONS = {"type": "array", "items": _object({
    "kind": {"enum": [k.value for k in DecisionKind]},
    "rule": _STR_OR_NULL, "message": {"type": "string"},
    "nodes": {"type": "array", "items": _NODE_OR_NULL},
    "refusals": {"type": "array", "items": _object({
        "rule": {"enum": [r.value for r in RefusalRule]}, "message": {"type": "string"},
        "node": _NODE_OR_NULL, "kernel": _NODE_OR_NULL, "blocker": _NODE_OR_NULL})},
    "readers": {"type": "array", "items": _STR_OR_NULL},
    "via": {"type": "array", "items": {"type": "string"}}})}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fusegrad dump",
    **_object({
        "schema": {"const": "fusegrad-dump"},
        "version": {"const": SCHEMA_VERSION},
        "target": {"type": "string"},
        "backend": {"enum": ["numba_cpu", "interpreter"]},
        "stages_shown": {"type": "array", "items": {"enum": list(STAGES)}},
        "graph": {"enum": ["traced", "optimized", "fused", None]},
        "stages": {"type": "array", "items": _object({
            "name": {"type": "string"},
            "made_by": {"enum": ["tracer", "pass", "fusion", "codegen"]},
            "seconds": {"type": "number", "minimum": 0},
            "nodes": _OPT_INT, "nodes_before": _OPT_INT, "folded": _OPT_INT,
            "kernels": _OPT_INT, "externs": _OPT_INT,
            "buffer_bytes": _OPT_INT, "buffer_bytes_no_reuse": _OPT_INT})},
        "summary": _object({
            "traced_nodes": _INT, "optimized_nodes": _INT, "constants_folded": _INT,
            "kernels": _OPT_INT, "extern_calls": _OPT_INT, "intermediate_bytes": _OPT_INT,
            "intermediate_bytes_without_reuse": _OPT_INT,
            "compile_seconds": {"type": "number", "minimum": 0}}),
        "nodes": {"type": "array", "items": _object({
            "id": _INT, "op": {"type": "string"}, "type": {"type": "string"},
            "shape": _IDS, "dtype": {"type": "string"}, "attrs": {"type": "string"},
            "loc": _STR_OR_NULL, "output": {"type": "boolean"},
            "made_by": {"enum": ["tracer", "passes", "fusion"]}, "kernel": _STR_OR_NULL})},
        "edges": {"type": "array", "items": _object(
            {"source": _INT, "target": _INT, "position": _INT})},
        "kernels": {"type": "array", "items": _object({
            "name": {"type": "string"}, "kind": {"enum": ["kernel", "extern"]},
            "op": _STR_OR_NULL, "shape": _IDS, "reduce_axes": _IDS, "writes": _IDS,
            "reads": {"type": "array", "items": _object(
                {"node": _INT, "buffer": _INT, "view": {"type": "string"}})},
            "body": _IDS, "notes": {"type": "array", "items": {"type": "string"}},
            "decisions": _DECISIONS, "source": _STR_OR_NULL})},
        "decisions": _DECISIONS,
        "buffers": {"type": "array", "items": _object({
            "node": _INT, "role": {"enum": ["input", "output", "intermediate"]},
            "type": {"type": "string"}, "bytes": _INT, "block": _OPT_INT,
            "offset": _OPT_INT})},
        "provenance": {"type": "array", "items": _object(
            {"loc": {"type": "string"}, "nodes": _IDS})},
    }),
}


# ----------------------------------------------------------------------------- JSON
def to_document(dump: Dump, stages: list[str] | None = None) -> dict[str, Any]:
    """The dump as a JSON-ready dict following :data:`SCHEMA`."""
    stages = list(stages or STAGES)
    report = dump.report
    kind, nodes, ids, outputs = _chosen_graph(report, stages)
    traced = set(report.traced.nodes)
    optimized = set(optimized_graph(report).nodes) if kind != "traced" else set()
    schedule = report.schedule if kind == "fused" else None
    owner = _computing_item(schedule) if schedule is not None else {}

    def made_by(n: Node) -> str:
        return "tracer" if n in traced else "passes" if n in optimized else "fusion"

    return {
        "schema": "fusegrad-dump", "version": SCHEMA_VERSION, "target": dump.target,
        "backend": report.backend, "stages_shown": stages, "graph": kind,
        "stages": [asdict(r) for r in stage_records(dump)],
        "summary": summary_totals(dump),
        "nodes": [{"id": ids[n], "op": n.op, "type": n.type_str, "shape": list(n.shape),
                   "dtype": n.dtype, "attrs": _attrs(n), "loc": n.loc, "output": n in outputs,
                   "made_by": made_by(n), "kernel": owner.get(n)} for n in nodes],
        "edges": [{"source": ids[i], "target": ids[n], "position": p}
                  for n in nodes for p, i in enumerate(n.inputs)],
        "kernels": [] if schedule is None else
        [_item(it, ids, report, "source" in stages) for it in schedule.items],
        "decisions": [] if schedule is None else _decisions(schedule.decisions, ids),
        "buffers": [] if schedule is None else _buffers(report, ids),
        "provenance": _provenance(nodes, ids),
    }


def to_json(dump: Dump, stages: list[str] | None = None) -> str:
    """:func:`to_document` as indented JSON text."""
    return json.dumps(to_document(dump, stages), indent=1)


def _chosen_graph(report: Any, stages: list[str]
                  ) -> tuple[str | None, list[Node], dict[Node, int], set[Node]]:
    """Which graph the document holds (``fused``, ``optimized``, ``traced`` or None), its nodes
    in order, their ``%`` numbers and its outputs."""
    if report.schedule is not None and {"schedule", "source"} & set(stages):
        return ("fused", *_fused_nodes(report.schedule), set(report.schedule.outputs))
    if report.schedule is not None and "passes" in stages:
        kind, graph = "optimized", optimized_graph(report)
    elif "traced" in stages or "passes" in stages:
        kind, graph = "traced", report.traced
    else:
        return None, [], {}, set()
    order = toposort(graph.outputs)
    return kind, order, {n: i for i, n in enumerate(order)}, set(graph.outputs)


def _fused_nodes(schedule: Schedule) -> tuple[list[Node], dict[Node, int]]:
    """The nodes the schedule computes and reads (the optimised graph after fusion's
    normalisation), numbered as ``format_schedule`` prints them. Fusion gives a node rebuilt
    over normalised operands its original's number; a number met twice, or a node the printer
    does not name, gets a new number after all of them."""
    roots: list[Node] = [*schedule.outputs, *schedule.inputs]
    for it in schedule.items:
        if isinstance(it, Kernel):
            roots += [*it.outputs, *it.body, *it.loads, *(ld.src for ld in it.loads.values())]
        else:
            roots += [it.node, *(ld.src for ld in it.loads)]
    order = toposort(roots)
    printed = schedule_node_ids(schedule)
    next_id = max(printed.values(), default=-1) + 1
    ids: dict[Node, int] = {}
    taken: set[int] = set()
    for n in order:
        number = printed.get(n)
        if number is None or number in taken:
            number, next_id = next_id, next_id + 1
        ids[n] = number
        taken.add(number)
    return order, ids


def _computing_item(schedule: Schedule) -> dict[Node, str]:
    owner: dict[Node, str] = {}
    for it in schedule.items:
        for n in (it.body if isinstance(it, Kernel) else (it.node,)):
            owner.setdefault(n, it.name)
    return owner


def _attrs(n: Node) -> str:
    if n.op == "buffer" or not n.attrs:
        return ""
    return ", ".join(str(a) for a in n.attrs)


def _item(it: Kernel | Extern, ids: dict[Node, int], report: Any, with_source: bool
          ) -> dict[str, Any]:
    source = None
    if with_source and isinstance(it, Kernel):
        source = next(s.source for s in report.program.sources if s.name == it.name)
    if isinstance(it, Extern):
        return {"name": it.name, "kind": "extern", "op": it.node.op, "shape": list(it.node.shape),
                "reduce_axes": [], "writes": [ids[it.node]],
                "reads": [{"node": ids[ld.src], "buffer": ids[ld.src], "view": format_view(ld.view)}
                          for ld in it.loads],
                "body": [], "notes": list(it.notes), "decisions": _decisions(it.decisions, ids),
                "source": None}
    return {"name": it.name, "kind": "kernel", "op": None, "shape": list(it.shape),
            "reduce_axes": list(it.reduce_axes), "writes": [ids[n] for n in it.outputs],
            "reads": [{"node": ids[ref], "buffer": ids[ld.src], "view": format_view(ld.view)}
                      for ref, ld in it.loads.items()],
            "body": [ids[n] for n in it.body], "notes": list(it.notes),
            "decisions": _decisions(it.decisions, ids), "source": source}


def _decisions(decisions: list[FusionDecision], ids: dict[Node, int]) -> list[dict[str, Any]]:
    """Fusion's decisions as data; a node no longer in the graph (rewritten away by fusion's
    normalisation) is null, and its message names it by its ``%`` number."""

    def ref(n: Node | None) -> int | None:
        return None if n is None else ids.get(n)

    return [{"kind": d.kind.value, "rule": d.rule, "message": str(d),
             "nodes": [ref(n) for n in d.nodes],
             "refusals": [{"rule": r.rule.value, "message": r.message, "node": ref(r.node),
                           "kernel": ref(r.kernel), "blocker": ref(r.blocker)}
                          for r in d.refusals],
             "readers": [name or None for name in d.readers], "via": list(d.via)}
            for d in decisions]


def _buffers(report: Any, ids: dict[Node, int]) -> list[dict[str, Any]]:
    schedule, plan = report.schedule, report.program.plan

    def entry(n: Node, role: str, block: int | None) -> dict[str, Any]:
        return {"node": ids[n], "role": role, "type": n.type_str,
                "bytes": n.size * to_numpy(n.dtype).itemsize, "block": block,
                "offset": None if block is None else plan.offset_of.get(n, 0)}

    rows = [entry(n, "input", None) for n in schedule.inputs]
    rows += [entry(n, "output", None) for n in dict.fromkeys(schedule.outputs)]
    rows += [entry(n, "intermediate", plan.block_of[n]) for n in plan.nodes]
    return rows


def _provenance(nodes: list[Node], ids: dict[Node, int]) -> list[dict[str, Any]]:
    by_loc: dict[str, list[int]] = {}
    for n in nodes:
        if n.loc:
            by_loc.setdefault(n.loc, []).append(ids[n])
    return [{"loc": loc, "nodes": by_loc[loc]} for loc in sorted(by_loc)]


# ----------------------------------------------------------------------------- DOT and SVG
def to_dot(dump: Dump, stages: list[str] | None = None) -> str:
    """Graphviz DOT of the graph :func:`to_document` chose: one box per node (``%id op``, type,
    ``file:line``), outputs bold, and one cluster per kernel or extern when the schedule is
    shown. The summary, when shown, is in ``//`` comments at the top of the graph."""
    doc = to_document(dump, stages)
    lines = ["digraph fusegrad {",
             f"  // fusegrad dump of {doc['target']}: {doc['graph'] or 'no'} graph"]
    if "summary" in doc["stages_shown"]:
        lines += [f"  // {line}" for line in _summary_lines(doc)]
    lines += [f'  label="{_esc(doc["target"])} ({doc["graph"] or "summary"})";',
              "  node [shape=box, fontname=monospace];"]
    clusters: dict[str, list[dict[str, Any]]] = {}
    for node in doc["nodes"]:
        clusters.setdefault(node["kernel"] or "", []).append(node)
    for k, (name, members) in enumerate(clusters.items()):
        indent = "  "
        if name:
            lines += [f"  subgraph cluster_{k} {{", f'    label="{_esc(name)}";']
            indent = "    "
        for node in members:
            label = f"%{node['id']} {node['op']}\\n{node['type']}"
            if node["loc"]:
                label += f"\\n{_esc(node['loc'])}"
            style = ", style=bold" if node["output"] else ""
            lines.append(f'{indent}n{node["id"]} [label="{label}"{style}];')
        if name:
            lines.append("  }")
    lines += [f"  n{e['source']} -> n{e['target']};" for e in doc["edges"]]
    lines.append("}")
    return "\n".join(lines)


def _summary_lines(doc: dict[str, Any]) -> list[str]:
    out = [f"{s['name']}: {s['made_by']}, {s['seconds'] * 1e3:.2f} ms"
           + "".join(f", {k} {s[k]}" for k in ("nodes", "folded", "kernels", "externs",
                                                "buffer_bytes") if s[k] is not None)
           for s in doc["stages"]]
    return out + [", ".join(f"{k} {v}" for k, v in doc["summary"].items())]


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is not on PATH."""


INSTALL_GRAPHVIZ = ("SVG needs Graphviz's `dot` program, which is not on PATH. Install Graphviz "
                    "(apt-get install graphviz, brew install graphviz, conda install graphviz, or "
                    "https://graphviz.org/download/), or render the DOT yourself: "
                    "dot -Tsvg FILE.dot -o FILE.svg.")


def dot_to_svg(dot: str) -> str:
    """SVG text of ``dot`` rendered by Graphviz's ``dot -Tsvg``.

    Raises:
        GraphvizMissing: ``dot`` is not installed (the message says how to get it).
    """
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(INSTALL_GRAPHVIZ)
    return subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True,
                          check=True).stdout


def dot_path(output: str | None) -> str | None:
    """Where the DOT goes when an SVG was asked for but cannot be made: ``output`` with a
    ``.dot`` suffix (stdout if None)."""
    return None if output is None else os.path.splitext(output)[0] + ".dot"
