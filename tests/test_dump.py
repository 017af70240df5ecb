"""``fusegrad dump TARGET``: every zoo workload in every format and stage, user files, bad TARGETs.

Each workload's training step is compiled once for the module (``_dumped``); every format and
stage is rendered from that one report.
"""
import json
import re
import shutil
import xml.etree.ElementTree as ET

import jsonschema
import networkx as nx
import pydot
import pytest

from fusegrad import dump_export
from fusegrad.bench import zoo
from fusegrad.cli import main
from fusegrad.dump import STAGES, Dump, capture, format_text
from fusegrad.dump_target import load_target

pytestmark = [pytest.mark.numba,
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # pydot on pyparsing 3.3

STAGE_CHOICES = [None, *([s] for s in STAGES)]   # None: every stage
PLACED = {"started", "fused", "fused-kept", "epilogue", "reduction", "extern", "recomputed"}
_DUMPS: dict[str, Dump] = {}
_DOT_GRAPHS: dict[str, nx.MultiDiGraph] = {}


def _dumped(name: str) -> Dump:
    if name not in _DUMPS:
        _DUMPS[name] = capture(load_target(name, train=True))
    return _DUMPS[name]


def _parsed_dot(text: str) -> nx.MultiDiGraph:
    """The DOT text read by pydot into networkx (each distinct text parsed once: pydot is slow)."""
    if text not in _DOT_GRAPHS:
        graphs = pydot.graph_from_dot_data(text)
        assert graphs is not None and len(graphs) == 1, text[:300]
        _DOT_GRAPHS[text] = nx.drawing.nx_pydot.from_pydot(graphs[0])
    return _DOT_GRAPHS[text]


def _forward_lines(name: str) -> set[int]:
    """Lines of ``zoo.py`` inside the workload's builder: its model code (``forward`` bodies and
    the layers it builds), not ``Built.step``'s training loop."""
    import inspect
    builder = {"mlp_b64": zoo.mlp, "mlp_b512": zoo.mlp, "lstm": zoo._recurrent,
               "gru": zoo._recurrent}.get(name) or getattr(zoo, name)
    source, first = inspect.getsourcelines(builder)
    return set(range(first, first + len(source)))


def _step_lines() -> set[int]:
    import inspect
    source, first = inspect.getsourcelines(zoo.Built.step)
    return set(range(first, first + len(source)))


# ----------------------------------------------------------------------------- every workload
@pytest.mark.parametrize("name", list(zoo.WORKLOADS))
def test_json_of_every_stage_follows_the_schema(name):
    d = _dumped(name)
    for stages in STAGE_CHOICES:
        doc = json.loads(dump_export.to_json(d, stages))
        jsonschema.validate(doc, dump_export.SCHEMA)
        assert doc["version"] == dump_export.SCHEMA_VERSION
        ids = [n["id"] for n in doc["nodes"]]
        assert len(set(ids)) == len(ids)
        known = set(ids)
        assert all(e["source"] in known and e["target"] in known for e in doc["edges"])
        for k in doc["kernels"]:
            assert set(k["writes"]) | set(k["body"]) | {r["buffer"] for r in k["reads"]} <= known
            assert (k["source"] is not None) == (stages in (None, ["source"]) and k["kind"] == "kernel")
            assert k["notes"] == [x["message"] for x in k["decisions"]]
            placed = [x["nodes"][0] for x in k["decisions"] if x["kind"] in PLACED]
            assert sorted(placed) == sorted(k["body"] if k["kind"] == "kernel" else k["writes"])
            assert {i for x in k["decisions"] for i in x["nodes"]} <= known
        assert {x["kind"] for x in doc["decisions"]} <= {"normalised", "output-view"}
        assert bool(doc["decisions"]) <= bool(doc["kernels"])
        assert {b["node"] for b in doc["buffers"]} <= known
        located = {i for p in doc["provenance"] for i in p["nodes"]}
        assert located == {n["id"] for n in doc["nodes"] if n["loc"]}
        if stages in (None, ["schedule"], ["source"]):
            assert doc["graph"] == "fused" and doc["kernels"] and doc["buffers"]
            assert len(doc["kernels"]) == doc["summary"]["kernels"] + doc["summary"]["extern_calls"]
        if stages == ["summary"]:
            assert doc["graph"] is None and not doc["nodes"]


# pydot reads about 1000 DOT lines a second: it parses these workloads' dumps (every stage);
# the others' are checked statement by statement against their JSON.
PYDOT_WORKLOADS = ("mlp_b64", "mlp_b512")


@pytest.mark.parametrize("name", list(zoo.WORKLOADS))
def test_dot_of_every_stage_matches_the_json(name):
    d = _dumped(name)
    for stages in STAGE_CHOICES:
        doc = dump_export.to_document(d, stages)
        text = dump_export.to_dot(d, stages)
        nodes = {f"n{n['id']}" for n in doc["nodes"]}
        edges = sorted((f"n{e['source']}", f"n{e['target']}") for e in doc["edges"])
        assert set(re.findall(r"^\s+(n\d+) \[label=", text, re.M)) == nodes
        assert sorted(re.findall(r"^\s+(n\d+) -> (n\d+);$", text, re.M)) == edges
        clusters = re.findall(r'^  subgraph cluster_\d+ \{\n    label="([^"]+)";', text, re.M)
        assert set(clusters) == {n["kernel"] for n in doc["nodes"] if n["kernel"]}
        if name in PYDOT_WORKLOADS:
            g = _parsed_dot(text)
            assert {n for n in g.nodes if re.fullmatch(r"n\d+", n)} == nodes
            assert sorted(g.edges()) == edges


@pytest.mark.parametrize("name", list(zoo.WORKLOADS))
def test_text_of_every_stage_shows_node_lines_with_the_models_lines(name):
    d = _dumped(name)
    model_lines, step_lines = _forward_lines(name), _step_lines()
    for stages in STAGE_CHOICES:
        text = format_text(d, stages)
        # a constant is interned: structurally equal ones are one node, which keeps the line of
        # whichever workload built it first in this process (ir/node.py), so constants are left out
        locs = re.findall(r"^\s*%\d+ : \w+\[[\d,]*\] = (?!const\[).*# fusegrad/bench/zoo\.py:(\d+)",
                          text, re.M)
        if stages in (None, ["traced"], ["passes"], ["schedule"]):
            assert locs, stages
            lines = {int(n) for n in locs}
            assert lines & model_lines, (stages, sorted(lines))
            assert lines <= model_lines | step_lines, sorted(lines - model_lines - step_lines)
    full = format_text(d)
    for marker in ("# summary", "# traced: made by the tracer", "after cse", "after dce",
                   "# schedule: made by fusion", "# generated source: made by codegen", "@njit"):
        assert marker in full, marker


def test_sequential_layers_point_at_the_lines_that_built_them():
    """mlp_b64 is a Sequential called by Built.step: its layers' ops point at the line building
    the Sequential, the loss at the step's loss line, the update at ``optimizer.step()``."""
    import inspect
    text = format_text(_dumped("mlp_b64"), ["traced"])
    source, first = inspect.getsourcelines(zoo.mlp)
    built = first + next(i for i, s in enumerate(source) if "nn.Sequential(" in s)
    assert re.search(rf"= matmul\(.*# fusegrad/bench/zoo\.py:{built}\b", text)
    step, first = inspect.getsourcelines(zoo.Built.step)
    loss = first + next(i for i, s in enumerate(step) if "loss_fn(" in s)
    update = first + next(i for i, s in enumerate(step) if "optimizer.step()" in s)
    assert f"zoo.py:{loss}" in text and f"zoo.py:{update}" in text


def test_traced_stage_says_what_it_expanded():
    """The graph keyed holds the LSTM layers' and the loss's macro nodes and the deferred
    gradients; the traced stage shows their expansion and says so."""
    first = format_text(_dumped("lstm"), ["traced"]).splitlines()[0]
    assert re.search(r"expanded from the \d+ nodes keyed: 1 macro call\(s\) of 'nll', "
                     r"2 macro call\(s\) of 'rnn', \d+ deferred gradient\(s\)", first), first
    assert "macro" not in format_text(_dumped("tiny"), ["traced"]).splitlines()[0]


def test_fusion_decisions_are_printed_and_exported_as_records():
    d = _dumped("mlp_b64")
    schedule = d.report.schedule
    text = format_text(d, ["schedule"])
    doc = json.loads(dump_export.to_json(d, ["schedule"]))
    for item, exported in zip(schedule.items, doc["kernels"]):
        assert [x["kind"] for x in exported["decisions"]] == [x.kind.value for x in item.decisions]
        assert [x["rule"] for r in exported["decisions"] for x in r["refusals"]] == \
            [x.rule.value for r in item.decisions for x in r.refusals]
        for decision in item.decisions:
            assert f"  - {decision}   [{decision.tag}]" in text
    assert [x["rule"] for x in doc["decisions"]] == [x.rule for x in schedule.decisions]
    kinds = {x["kind"] for k in doc["kernels"] for x in k["decisions"]}
    assert {"started", "fused", "extern", "materialised"} <= kinds


def test_summary_counts_every_stage():
    d = _dumped("mlp_b64")
    text = format_text(d, ["summary"])
    for stage in ("traced", "simplify", "constfold", "cse", "dce", "fusion", "codegen+compile"):
        assert re.search(rf"^{re.escape(stage)}\s", text, re.M), stage
    totals = json.loads(dump_export.to_json(d, ["summary"]))["summary"]
    assert totals["kernels"] == d.report.kernel_count > 0
    assert totals["intermediate_bytes"] == d.report.program.plan.total_bytes > 0
    assert (f"{totals['kernels']} kernels, {totals['extern_calls']} extern calls, "
            f"{totals['intermediate_bytes']} bytes of intermediate buffers") in text


def test_source_stage_lists_how_each_assign_is_written():
    """A training step's parameter updates are assigns; the dump says which are stored in place
    (and why the others are copied), one line per assign."""
    d = _dumped("mlp_b64")
    text = format_text(d, ["source"])
    decisions = d.report.program.assigns
    assert decisions and any(x.in_place for x in decisions)
    stored = sum(x.in_place for x in decisions)
    assert f"assigns: {stored} of {len(decisions)} stored in place" in text
    assert len(re.findall(r"^  assign #\d+ -> x\d+ ", text, re.M)) == len(decisions)


# ----------------------------------------------------------------------------- the command
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["dump", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_zoo_forward_without_train_has_no_optimizer_update(capsys, tmp_path):
    code, out, _ = _cli(capsys, "tiny", "--stage", "traced", "--stage", "summary")
    assert code == 0 and "(zoo, small, forward)" in out and "# traced" in out
    assert "zoo.py:35" not in out   # Built.step's optimizer.step()
    path = tmp_path / "tiny.json"
    assert _cli(capsys, "tiny", "--format", "json", "-o", str(path))[0] == 0
    jsonschema.validate(json.loads(path.read_text()), dump_export.SCHEMA)


USER_FILE = '''
import fusegrad as torch
import fusegrad.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))   # FC1
        return self.fc2(h)            # FC2


def forward():
    return Net(), torch.randn(4, 6)


def train():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, (torch.randn(4, 6),), nn.CrossEntropyLoss(), opt, torch.randint(0, 3, (4,))


def train_closure():
    model, inputs, loss_fn, opt, y = train()
    return model, inputs, lambda out: loss_fn(out, y), opt


def three():
    return Net(), torch.randn(4, 6), None


def wrong_features():
    return Net(), torch.randn(4, 7)


def raises():
    raise RuntimeError("no data here")
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_FILE)
    lines = USER_FILE.splitlines()
    return str(path), {m: 1 + next(i for i, s in enumerate(lines) if f"# {m}" in s)
                       for m in ("FC1", "FC2")}


def test_a_user_file_outside_the_package(capsys, user_file):
    path, lines = user_file
    code, out, err = _cli(capsys, f"{path}:forward", "--stage", "traced")
    assert code == 0, err
    assert re.search(rf"= matmul\(.*# .*my_model\.py:{lines['FC1']}\b", out)
    assert re.search(rf"= matmul\(.*# .*my_model\.py:{lines['FC2']}\b", out)
    for fn in ("train", "train_closure"):
        code, out, err = _cli(capsys, f"{path}:{fn}", "--train", "--format", "json")
        assert code == 0, err
        doc = json.loads(out)
        jsonschema.validate(doc, dump_export.SCHEMA)
        locs = {p["loc"] for p in doc["provenance"]}
        assert any(loc.endswith(f"my_model.py:{lines['FC1']}") for loc in locs), locs
        assert doc["summary"]["kernels"] > 0 and "training step" in doc["target"]


@pytest.mark.parametrize("target, train, expected", [
    ("no_such_workload", False, "neither a zoo workload"),
    ("{dir}/missing.py:forward", False, "there is no file"),
    ("{file}:nothing", False, "defines no function 'nothing'"),
    ("{file}:three", False, "returned a tuple of length 3"),
    ("{file}:forward", True, "--train needs (model, inputs, loss_fn, optimizer)"),
    ("{file}:wrong_features", False, "failed with ShapeError"),
    ("{file}:raises", False, "calling raises() failed with RuntimeError: no data here"),
])
def test_bad_targets_exit_2_with_one_paragraph(capsys, user_file, tmp_path, target, train,
                                               expected):
    path, _ = user_file
    args = [target.format(dir=tmp_path, file=path)] + (["--train"] if train else [])
    code, out, err = _cli(capsys, *args)
    assert code == 2 and not out
    assert expected in err and err.count("\n") == 1, err
    assert "(model, inputs" in err or "ShapeError" in err


def test_svg_without_graphviz_writes_dot_and_says_how_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, err = _cli(capsys, "mlp_b64", "--format", "svg", "--stage", "passes",
                          "-o", str(tmp_path / "mlp.svg"))
    assert code == 1 and "apt-get install graphviz" in err and "mlp.dot" in err
    assert not (tmp_path / "mlp.svg").exists()
    _parsed_dot((tmp_path / "mlp.dot").read_text())


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_with_graphviz(capsys, tmp_path):
    code, _, err = _cli(capsys, "mlp_b64", "--format", "svg", "-o", str(tmp_path / "mlp.svg"))
    assert code == 0, err
    root = ET.parse(tmp_path / "mlp.svg").getroot()
    assert root.tag.endswith("svg") and "k0_matmul" in (tmp_path / "mlp.svg").read_text()


CAT_FILE = '''
import fusegrad as torch
import fusegrad.nn as nn


class Cat(nn.Module):
    def forward(self, x):
        return torch.cat([(x * (k + 1)).exp() for k in range(12)], 0).sum(0)


def forward():
    return Cat(), torch.randn(4, 6)
'''


def test_a_placed_concatenation_is_shown(capsys, tmp_path):
    """The buffer plan's decision to write a concatenation's pieces in place is in the dump."""
    path = tmp_path / "cat_model.py"
    path.write_text(CAT_FILE)
    code, out, err = _cli(capsys, f"{path}:forward", "--stage", "source")
    assert code == 0, err
    assert "# concatenations: placed by the buffer plan" in out
    assert re.search(r"\[\d+\] k\d+_concat_48x6: 12 pieces written into its block", out)
