"""``fusegrad bench``: the zoo's workloads run, check against PyTorch and report every number."""
from __future__ import annotations

import csv
import json
import math

import pytest

from fusegrad.bench import harness, report, zoo
from fusegrad.cli import main
from fusegrad.ir import ops
from fusegrad.ir.flops import count_flops

VARIANTS = ("fusegrad_compiled", "fusegrad_eager", "torch_eager")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "tiny", "mlp_b64", "--small", "--rounds", "2", "--steps", "2",
            "--warmup", "1", "--quiet", "--json", str(out / "b.json"), "--csv", str(out / "b.csv")]
    code = main(argv)
    return code, json.loads((out / "b.json").read_text()), out


def test_bench_json_has_every_number(bench_run, capsys):
    code, data, _ = bench_run
    assert code == 0
    assert data["version"] == report.FORMAT_VERSION
    assert data["machine"]["versions"]["torch"] and data["machine"]["cpus"] >= 1
    assert data["settings"]["workloads"] == ["tiny", "mlp_b64"]
    for wl in data["workloads"]:
        assert wl["check"]["passed"] and wl["check"]["against"] == "torch"
        assert set(VARIANTS) <= set(wl["variants"])
        for v in VARIANTS:
            d = wl["variants"][v]
            step = d["step"]
            assert step["samples"] == 4
            assert 0 < step["min_ms"] <= step["median_ms"] <= step["max_ms"]
            assert step["iqr_ms"] >= 0 and d["peak_rss_mb"] > 0 and d["gflops"] > 0
            assert d["first_step_warm_s"] > 0
        fc = wl["variants"]["fusegrad_compiled"]
        assert fc["kernels"] > 0 and fc["externs"] > 0 and fc["flops"] > 0
        assert fc["first_step_cold_s"] > 0
        assert wl["speedup_vs_torch_eager"]["fusegrad_compiled"] > 0
        losses = wl["check"]["losses"]
        assert len(losses["torch_eager"]) == 3
        assert losses["fusegrad_compiled"][0] == pytest.approx(losses["torch_eager"][0], rel=1e-4)


def test_bench_csv_has_a_row_per_workload_and_variant(bench_run):
    _, _, out = bench_run
    with open(out / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["workload"], r["variant"]) for r in rows} >= {
        (w, v) for w in ("tiny", "mlp_b64") for v in VARIANTS}
    assert all(float(r["median_ms"]) > 0 for r in rows)


def test_flop_count_of_a_linear_layer():
    a = ops.const(1.0, (4, 3), "float32")
    b = ops.const(2.0, (3, 5), "float32")
    y = ops.unary("exp", ops.matmul(a, b))
    s = ops.reduce("sum", y, (0, 1))
    assert count_flops([s]) == 2 * 4 * 5 * 3 + 4 * 5 + 4 * 5


def test_timing_statistics_and_noise_flag():
    t = harness.Timing([1.0, 1.0, 1.0, 1.0, 2.0])
    assert t.median == 1.0 and not t.noisy
    assert harness.Timing([1.0, 2.0, 3.0, 4.0]).noisy
    assert report.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)


def test_loss_check_is_tight_on_the_first_step_and_looser_after():
    assert harness._close([1.0, 2.0], [1.0, 2.01], float64=False)[0]
    ok, why = harness._close([1.001, 2.0], [1.0, 2.0], float64=False)
    assert not ok and "step 1" in why
    assert not harness._close([1.0], [1.0, 2.0], float64=False)[0]


def test_without_torch_fusegrad_is_checked_against_its_interpreter(monkeypatch):
    monkeypatch.setattr(harness, "torch_available", lambda: False)
    settings = harness.Settings(["tiny"], warmup=1, rounds=1, steps=1, small=True,
                                first_step=False)
    res = harness.run_workload("tiny", settings)
    assert res.check_against == "interpreter" and res.check_passed
    assert set(res.variants) == {"fusegrad_compiled", "fusegrad_eager"}
    assert "torch_eager" not in res.losses and "fusegrad_interpreter" in res.losses
    assert "FAILED" not in report.table([res], settings)


def test_a_failed_check_shows_failed_and_no_timing(monkeypatch):
    monkeypatch.setattr(harness, "_close", lambda got, want, float64: (False, "step 1: off"))
    settings = harness.Settings(["tiny"], warmup=1, rounds=1, steps=1, small=True,
                                first_step=False)
    res = harness.run_workload("tiny", settings)
    assert not res.check_passed
    assert all(r.step is None for r in res.variants.values())
    text = report.table([res], settings)
    assert "FAILED" in text and "step 1: off" in text


def test_unknown_workload_exits_2(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown workload" in capsys.readouterr().err


def test_a_negative_gap_exits_2(capsys):
    assert main(["bench", "tiny", "--gap", "-1"]) == 2
    assert "--gap must be a number of seconds >= 0, got -1.0" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(zoo.WORKLOADS))
def test_every_zoo_workload_matches_torch_for_three_steps(name):
    """Both libraries run the same code from the same weights: the losses agree."""
    ref, ours = zoo.build_pair(name, small=True)
    want = [ref.step().item() for _ in range(3)]
    got = [ours.step().item() for _ in range(3)]
    ok, why = harness._close(got, want, float64=name == "lstmcell_unrolled")
    assert ok, why
    assert all(math.isfinite(v) for v in got)


def test_a_variant_that_cannot_start_is_reported_not_fatal(monkeypatch):
    real = harness.Worker.__init__

    def failing(self, variant, *args, **kwargs):
        if variant == "torch_compile":
            raise RuntimeError("torch_compile: no compiler here")
        real(self, variant, *args, **kwargs)

    monkeypatch.setattr(harness.Worker, "__init__", failing)
    settings = harness.Settings(["tiny"], warmup=1, rounds=1, steps=1, small=True,
                                first_step=False, torch_compile=True)
    res = harness.run_workload("tiny", settings)
    assert res.check_passed and res.variants["fusegrad_compiled"].step is not None
    assert "no compiler" in res.variants["torch_compile"].error
    assert "no compiler" in report.table([res], settings)


def test_every_turn_starts_after_an_idle_gap(monkeypatch):
    """The previous worker's spinning BLAS/OpenMP threads must be asleep when a turn is timed."""
    events = []

    class Stub:
        def __init__(self, name):
            self.name = name

        def call(self, cmd, n=None):
            events.append((self.name, cmd, n))
            return {"times": [0.001] * (n or 0), "losses": []}

    monkeypatch.setattr(harness.time, "sleep", lambda s: events.append(("sleep", s)))
    settings = harness.Settings(["tiny"], warmup=1, round_warmup=1, rounds=2, steps=3, gap=0.25)
    live = {"a": Stub("a"), "b": Stub("b")}
    result = harness.WorkloadResult("tiny", "torch", True, "", {})
    result.variants = {v: harness.VariantResult() for v in live}
    harness._time(live, list(live), settings, result, None)
    timed = [i for i, e in enumerate(events) if e[1:] == ("steps", 3)]
    assert len(timed) == 4   # two rounds of two variants
    for i in timed:          # each turn: the gap, then the round's warm-up steps, then timing
        assert events[i - 2] == ("sleep", 0.25) and events[i - 1] == (events[i][0], "steps", 1)
    assert "0.25 s idle" in report.table([], settings)


def test_torch_workers_can_flush_denormals(monkeypatch):
    """``--torch-flush-denormal`` reaches torch's worker as ``torch.set_flush_denormal(True)``
    (fusegrad's programs flush by default; torch's eager Adam slowed 7x on denormals)."""
    import torch

    from fusegrad.bench import worker
    calls = []
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: calls.append(on))
    worker.Runner({"variant": "torch_eager", "workload": "tiny", "small": True,
                   "flush_denormal": True})
    worker.Runner({"variant": "torch_eager", "workload": "tiny", "small": True})
    assert calls == [True]
    from fusegrad import cli
    monkeypatch.setattr(harness, "run", lambda settings, show_progress: calls.append(settings)
                        or [])
    monkeypatch.setattr(report, "table", lambda results, settings: "")
    monkeypatch.setattr(report, "as_json", lambda results, settings: {})
    cli.main(["bench", "tiny", "--torch-flush-denormal", "--quiet"])
    assert calls[-1].torch_flush_denormal
