"""The results report: one markdown table per model kind, training curves and accuracy-vs-latency PNGs."""
from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path

log = logging.getLogger(__name__)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def mean_std(values: list[float]) -> str:
    """'m ± s (n=k)' in percent, or a single value when there is one."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def model_table(evaluation: dict, exports: dict[str, dict]) -> list[str]:
    """Markdown rows: model, kind, method, arch, teachers, params, size, top-1, INT8 top-1, latency."""
    rows = ["| model | kind | method | arch | teachers / targets | params | size MB | test top-1 % | top-5 % | NLL | ECE | INT8 top-1 % | ORT INT8 p50 ms (b=1) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in evaluation.items():
        ex = exports.get(name, {})
        int8 = f"{100 * ex['top1']['int8']:.2f}" if "top1" in ex else "—"
        lat = ex.get("latency", {}).get("ort_int8", {}).get("b1", {}).get("p50_ms")
        rows.append(f"| {name} | {m.get('kind', '')} | {m.get('method', '')} | {m.get('arch', '')} | {m.get('sources', '')} | "
                    f"{m.get('params', 0):,} | {m.get('size_mb', 0):.2f} | {100 * m['top1']:.2f} | {100 * m['top5']:.2f} | "
                    f"{m['nll']:.3f} | {m['ece']:.3f} | {int8} | {f'{lat:.3f}' if lat else '—'} |")
    return rows


def read_history(tsv: Path) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    if tsv.is_file():
        with tsv.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                xs.append(float(row["step"]))
                ys.append(float(row[next(k for k in row if k not in ("step", "timestamp"))]))
    return xs, ys


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], out: Path) -> None:
    """Validation top-1 per epoch for every trained model, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys) in curves.items():
        if xs:
            ax.plot(xs, [100 * y for y in ys], marker="o", ms=3, label=name)
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="Training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_acc_latency(points: list[tuple[str, float, float]], out: Path) -> None:
    """Test top-1 against ORT p50 latency (batch 1), one labelled point per exported model/precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, lat, acc in points:
        ax.scatter(lat, 100 * acc, s=40, marker="s" if "INT8" in label else "o")
        ax.annotate(label, (lat, 100 * acc), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel="ONNX Runtime p50 latency, batch 1 (ms) — lower is better", ylabel="test top-1 (%)", title="Accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def seed_groups(evaluation: dict) -> dict[str, list[float]]:
    """Group models named `<base>_s<k>` (one per seed) and collect their test top-1."""
    import re

    groups: dict[str, list[float]] = {}
    for name, m in evaluation.items():
        match = re.fullmatch(r"(.+)_s\d+", name)
        if match:
            groups.setdefault(match.group(1), []).append(m["top1"])
    return {k: v for k, v in groups.items() if len(v) > 1}


def build_report(evaluation: dict, exports: dict[str, dict], curves: dict, out_dir: Path, header: str) -> str:
    """Write the PNG plots under `out_dir/plots` and return the markdown text of the report."""
    plot_curves(curves, out_dir / "plots" / "curves.png")
    points = []
    for name, ex in exports.items():
        lat = ex.get("latency", {})
        for key, label in (("ort_fp32", "fp32"), ("ort_int8", "INT8")):
            p50 = lat.get(key, {}).get("b1", {}).get("p50_ms")
            acc = ex.get("top1", {}).get(label.lower())
            if p50 is not None and acc is not None:
                points.append((f"{name} {label}", p50, acc))
    lines = [header, "", "## Models (test split, last epoch)", "", *model_table(evaluation, exports), ""]
    groups = seed_groups(evaluation)
    if groups:
        lines += ["## Over seeds (test top-1 %, mean ± std, last epoch)", "", "| model | top-1 % | seeds |", "|---|---|---|"]
        lines += [f"| {k} | {mean_std(v)} | {len(v)} |" for k, v in sorted(groups.items())] + [""]
    if points:
        plot_acc_latency(points, out_dir / "plots" / "acc_latency.png")
        lines += ["## Deployment (ONNX Runtime, CPU)", "", "| model | precision | size MB | test top-1 % | p50 ms b=1 | p50 ms b=64 | images/s b=64 |",
                  "|---|---|---|---|---|---|---|"]
        for name, ex in exports.items():
            for key, prec in (("ort_fp32", "fp32"), ("ort_int8", "int8")):
                lat = ex.get("latency", {}).get(key, {})
                acc = ex.get("top1", {}).get(prec, float("nan"))
                size = ex.get("size_bytes", {}).get(prec, 0) / 2**20
                b1, b64 = lat.get("b1", {}), lat.get("b64", {})
                lines.append(f"| {name} | {prec} | {size:.2f} | {100 * acc:.2f} | {b1.get('p50_ms', float('nan')):.3f} | "
                             f"{b64.get('p50_ms', float('nan')):.2f} | {b64.get('images_per_s', float('nan')):.0f} |")
        lines += ["", "![accuracy vs latency](plots/acc_latency.png)", ""]
    lines += ["![training curves](plots/curves.png)", ""]
    return "\n".join(lines)
