"""What ``fusegrad bench`` prints and writes: the table, JSON, CSV and a plot of speedups."""
from __future__ import annotations

import csv
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import Settings, VariantResult, WorkloadResult

FORMAT_VERSION = 1
SHORT = {"fusegrad_compiled": "fg.compile", "fusegrad_eager": "fg eager",
         "torch_eager": "torch", "torch_compile": "torch.compile"}


def geometric_mean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _ms(r: VariantResult | None) -> str:
    if r is None or r.step is None:
        return "-"
    return f"{r.step.median * 1e3:.2f}{'~' if r.step.noisy else ''}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(results: list[WorkloadResult], settings: Settings) -> str:
    """The side-by-side table: step times (median ms; ``~`` marks IQR/median > 0.1), speedups
    over PyTorch eager, first-step times, peak memory, kernels and GFLOP/s."""
    variants = ["fusegrad_compiled", "fusegrad_eager", "torch_eager"] + \
        (["torch_compile"] if settings.torch_compile else [])
    head = ["workload", "check"] + [f"{SHORT[v]} ms" for v in variants] + \
        ["compile/torch", "eager/torch", "cold 1st s", "warm 1st s", "RSS MB fg/torch",
         "kernels+ext", "GFLOP/s"]
    rows = [head]
    for res in results:
        fc = res.variants.get("fusegrad_compiled")
        torch_r = res.variants.get("torch_eager")
        check = ("ok" if res.check_passed else "FAILED") + f" ({res.check_against})"
        if not res.check_passed:
            rows.append([res.name, check] + ["-"] * (len(head) - 2))
            continue
        facts = fc.facts if fc else {}
        gflops = "-"
        if fc and fc.step and facts.get("flops"):
            gflops = f"{facts['flops'] / fc.step.median / 1e9:.1f}"
        rss = f"{facts.get('peak_rss_mb', 0):.0f}/" + \
            (f"{torch_r.facts.get('peak_rss_mb', 0):.0f}" if torch_r else "-")
        rows.append([res.name, check] + [_ms(res.variants.get(v)) for v in variants] + [
            _x(res.speedup("fusegrad_compiled")), _x(res.speedup("fusegrad_eager")),
            _seconds(fc.first_step_cold_s if fc else None),
            _seconds(fc.first_step_warm_s if fc else None), rss,
            f"{facts.get('kernels', '-')}+{facts.get('externs', '-')}", gflops])
    means = [geometric_mean([s for s in (r.speedup(v) for r in results) if s is not None])
             for v in ("fusegrad_compiled", "fusegrad_eager")]
    rows.append(["geomean", ""] + [""] * len(variants) + [_x(means[0]), _x(means[1])] +
                [""] * 5)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"median of {settings.rounds} interleaved rounds x {settings.steps} steps (each "
             f"round after {settings.round_warmup} untimed steps and {settings.gap:g} s idle) "
             f"after {settings.warmup} warm-up steps; '~': IQR/median > 0.1 (noisy)"
             + ("; torch with denormals flushed" if settings.torch_flush_denormal else ""),
             "fusegrad's matrix products: " + (
                 "MKL (torch's CPU build links MKL too)" if matrix_products() == "mkl" else
                 "numpy's BLAS (pip install 'fusegrad[mkl]' multiplies with MKL, as torch does)")]
    for res in results:
        if not res.check_passed:
            notes.append(f"{res.name}: correctness check FAILED: {res.check_detail}")
        for v, r in res.variants.items():
            if r.step is not None and r.step.noisy:
                notes.append(f"{res.name} {SHORT[v]}: noisy (IQR {r.step.iqr * 1e3:.2f} ms on "
                             f"a median of {r.step.median * 1e3:.2f} ms)")
            if r.error:
                notes.append(f"{res.name} {SHORT[v]}: {r.error}")
    return "\n".join(lines + [""] + notes)


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("fusegrad", "numpy", "numba", "llvmlite", "scipy", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "blas": matrix_products()}


def matrix_products() -> str:
    """Which BLAS fusegrad's workers multiply with (``mkl`` or ``numpy``), as they will choose."""
    from ..backends.numba_cpu import blas
    return blas.chosen()


def as_json(results: list[WorkloadResult], settings: Settings) -> dict[str, Any]:
    """Every number of the run, with the machine, versions and settings (format ``version``)."""
    out = {"version": FORMAT_VERSION, "machine": machine(), "settings": vars(settings),
           "workloads": []}
    for res in results:
        variants = {}
        for v, r in res.variants.items():
            d: dict[str, Any] = {"step": r.step.as_dict() if r.step else None,
                                 "inference": r.inference.as_dict() if r.inference else None,
                                 "first_step_cold_s": r.first_step_cold_s,
                                 "first_step_warm_s": r.first_step_warm_s, "error": r.error,
                                 **r.facts}
            if r.step and r.facts.get("flops"):
                d["gflops"] = r.facts["flops"] / r.step.median / 1e9
            variants[v] = d
        # the FLOPs of a step are the same in every library: give PyTorch's rate too
        flops = res.variants.get("fusegrad_compiled", VariantResult()).facts.get("flops")
        for v, d in variants.items():
            if flops and "gflops" not in d and d["step"]:
                d["gflops"] = flops / (d["step"]["median_ms"] / 1e3) / 1e9
        out["workloads"].append({
            "name": res.name, "check": {"against": res.check_against, "passed": res.check_passed,
                                        "detail": res.check_detail, "losses": res.losses},
            "variants": variants,
            "speedup_vs_torch_eager": {v: res.speedup(v) for v in res.variants
                                       if v != "torch_eager"}})
    return out


def write_csv(path: Path, data: dict[str, Any]) -> None:
    """One row per workload and variant."""
    fields = ["workload", "variant", "check_passed", "median_ms", "iqr_ms", "min_ms", "max_ms",
              "samples", "noisy", "speedup_vs_torch_eager", "first_step_cold_s",
              "first_step_warm_s", "peak_rss_mb", "kernels", "externs", "flops", "gflops",
              "inference_median_ms"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for wl in data["workloads"]:
            for v, d in wl["variants"].items():
                step = d.get("step") or {}
                w.writerow({"workload": wl["name"], "variant": v,
                            "check_passed": wl["check"]["passed"],
                            **{k: step.get(k) for k in ("median_ms", "iqr_ms", "min_ms",
                                                        "max_ms", "samples", "noisy")},
                            "speedup_vs_torch_eager": wl["speedup_vs_torch_eager"].get(v),
                            **{k: d.get(k) for k in ("first_step_cold_s", "first_step_warm_s",
                                                     "peak_rss_mb", "kernels", "externs",
                                                     "flops", "gflops")},
                            "inference_median_ms": (d.get("inference") or {}).get("median_ms")})


def plot(path: Path, data: dict[str, Any]) -> None:
    """A bar chart of each workload's speedup over PyTorch eager (needs matplotlib:
    ``pip install 'fusegrad[plot]'``)."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'fusegrad[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [wl["name"] for wl in data["workloads"]]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    series = ["fusegrad_compiled", "fusegrad_eager", "torch_compile"]
    width = 0.8 / len(series)
    for i, v in enumerate(series):
        ys = [wl["speedup_vs_torch_eager"].get(v) or 0.0 for wl in data["workloads"]]
        if any(ys):
            ax.bar([j + i * width for j in range(len(names))], ys, width, label=SHORT[v])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width for j in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylabel("speedup over PyTorch eager (x)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1))
