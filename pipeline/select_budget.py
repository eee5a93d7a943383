"""The trained student of `arch: selected` against the budget select-student chose it for.

`measure_as_selected` (export stage) times the exported student the way select-student timed its
candidates: the budget's precision, batch size and thread count, ONNX Runtime on the CPU, warm-up and
timed calls as `select.warmup`/`select.runs`. It reuses the export stage's own latency when that was
taken on the CPU at the same batch size and thread count, else it times the file itself. Params and
MACs are counted on the trained model as the selection counted its candidates.
`compare` (report stage) puts the budget, the selection's prediction (models/selected.json) and that
measurement side by side with a verdict; `budget_section` renders it for results/report.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.errors import KdpipeError
from pipeline.select_space import Candidate, SelectParams

log = logging.getLogger(__name__)

RUNTIMES = {"int8": "ort_int8", "fp32": "ort_fp32"}  # export's latency names per deployed precision
MEETS, OVER, NOT_COMPARABLE = "meets budget", "over budget", "not comparable"


def measure_as_selected(
    art_path: str | Path, onnx_files: dict[str, Path], images: np.ndarray, sp: SelectParams, export: dict
) -> dict:
    """The exported student's latency (p50/p90 ms), file size, params and MACs at the selection's setting.

    `onnx_files`: {"fp32": path, "int8": path}; `images`: float32 [0, 1] NCHW test images;
    `export`: the export stage's metrics (its latency is reused when it matches the setting).
    """
    from pipeline import bench, checkpoint
    from pipeline.predict import INPUT, OUTPUT, make_session, resolve_threads
    from pipeline.select_space import describe

    model, art = checkpoint.load_model(art_path)
    cand = Candidate(art["arch"], int(art["input_size"]), dict(art.get("arch_kwargs", {})))
    runtime, threads, b = RUNTIMES[sp.precision], resolve_threads(sp.threads), f"b{sp.batch_size}"
    env = export["env"]
    own = export["latency"].get(runtime, {}).get(b)
    if own and env["threads"] == threads and env["providers"].get(runtime) == "CPUExecutionProvider":
        timing = {
            "p50_ms": own["p50_ms"],
            "p90_ms": own["p90_ms"],
            "runs": env["runs"],
            "warmup": env["warmup"],
        }
        source = "export latency"
    else:
        sess, _ = make_session(onnx_files[sp.precision], sp.threads, "cpu")
        x = np.ascontiguousarray(images[np.arange(sp.batch_size) % len(images)], dtype=np.float32)
        t = bench.time_runs({runtime: lambda: sess.run([OUTPUT], {INPUT: x})}, sp.warmup, sp.runs)[runtime]
        timing = {
            "p50_ms": float(t["p50_ms"]),
            "p90_ms": float(t["p90_ms"]),
            "runs": sp.runs,
            "warmup": sp.warmup,
        }
        source = "timed for the budget"
    size = Path(onnx_files[sp.precision]).stat().st_size
    out = {
        "label": cand.label,
        **cand.key(),
        **describe(cand, model, int(art["num_classes"]), int(art["in_channels"])),
        "precision": sp.precision,
        "batch_size": sp.batch_size,
        "threads": threads,
        **timing,
        "source": source,
        "size_bytes": size,
        "size_mb": size / 1e6,
        "cpu": env["cpu"],
        "onnxruntime": env["versions"].get("onnxruntime", env["versions"].get("onnxruntime-gpu", "?")),
    }
    log.info(
        "as selected (%s, batch %d, %d thread(s)): p50 %.3f ms, p90 %.3f ms (%s)",
        sp.precision,
        sp.batch_size,
        threads,
        out["p50_ms"],
        out["p90_ms"],
        source,
    )
    return out


def compare(selected: dict, export: dict, name: str) -> dict:
    """Budget vs prediction vs measurement of one exported `arch: selected` student, with verdicts.

    `selected`: models/selected.json; `export`: the student's export metrics (with `budget_timing`).
    Returns {name, budget, setting, rows: [{key, limit, predicted, measured, fits}], verdict, notes}.
    """
    if not selected:
        raise KdpipeError(f"{name}: arch: selected but models/selected.json is missing; run select-student")
    m = export.get("budget_timing")
    if not m:
        raise KdpipeError(
            f"results/export/{name}/metrics.json has no budget timing; run kdpipe export {name}"
        )
    budget = selected.get("budget", {})
    timed = selected.get("timed", {})
    stat = budget.get("latency_stat", "p50")
    rows = [
        ("latency_ms", budget.get("latency_ms"), selected["predicted_latency_ms"][stat], m[f"{stat}_ms"]),
        ("size_mb", budget.get("max_mb"), selected["size_mb"], m["size_mb"]),
        ("params", budget.get("max_params"), selected["params"], m["params"]),
        ("macs", budget.get("max_macs"), selected["macs"], m["macs"]),
    ]
    out_rows = [
        {"key": k, "limit": lim, "predicted": p, "measured": v, "fits": None if not lim else v <= lim}
        for k, lim, p, v in rows
    ]
    setting = {
        "precision": m["precision"],
        "batch_size": m["batch_size"],
        "threads": m["threads"],
        "latency_stat": stat,
    }
    want = (selected.get("precision"), timed.get("batch_size", budget.get("batch_size")))
    want += (timed.get("threads", budget.get("threads")),)
    notes = []
    if want != (m["precision"], m["batch_size"], m["threads"]):
        notes.append(
            f"measured at {m['precision']}, batch {m['batch_size']}, {m['threads']} thread(s) but selected "
            f"at {want[0]}, batch {want[1]}, {want[2]} thread(s): run dvc repro"
        )
    if m["label"] != selected["label"]:
        notes.append(f"the trained arch {m['label']} is not the selection {selected['label']}: run dvc repro")
    verdict = NOT_COMPARABLE if notes else OVER if any(r["fits"] is False for r in out_rows) else MEETS
    if selected.get("cpu") and selected["cpu"] != m["cpu"]:
        notes.append(f"selected on {selected['cpu']}, measured on {m['cpu']}")
    return {
        "name": name,
        "chosen": selected["label"],
        "trained": m["label"],
        "budget": budget,
        "setting": setting,
        "rows": out_rows,
        "verdict": verdict,
        "notes": notes,
        "source": m["source"],
        "runs": m["runs"],
    }


def _row_name(key: str, setting: dict) -> str:
    prec = setting["precision"].upper()
    if key == "latency_ms":
        return (
            f"{setting['latency_stat']} latency, ms ({prec}, batch {setting['batch_size']}, "
            f"{setting['threads']} thread(s))"
        )
    return {"size_mb": f"{prec} file, MB", "params": "params", "macs": "MMACs per image"}[key]


def _value(key: str, v: float | None) -> str:
    if v is None:
        return "—"
    if key == "params":
        return f"{int(v):,}"
    if key == "macs":
        return f"{v / 1e6:.2f}"
    return f"{v:.3f}"


def _limit(key: str, v: float | None) -> str:
    if not v:
        return "no limit"
    return "≤ " + (_value(key, v) if key in ("params", "macs") else f"{v:g}")  # ms and MB as in params


def budget_section(comparisons: dict[str, dict]) -> list[str]:
    """Markdown lines of the report's budget section: one small table per `arch: selected` student."""
    if not comparisons:
        return []
    lines = [
        "## Deployment budget (select-student)",
        "",
        "Predicted: the untrained candidate as select-student timed it (models/selected.json); measured: the "
        "trained student's exported model, timed the same way (ONNX Runtime on the CPU).",
        "",
    ]
    for name, c in comparisons.items():
        lines += [
            f"**{name}** (`arch: selected`): chosen {c['chosen']}, trained {c['trained']}: "
            f"**{c['verdict']}**",
            "",
            "| | budget | predicted | measured | measured / predicted | verdict |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in c["rows"]:
            ratio = f"{r['measured'] / r['predicted']:.2f}" if r["predicted"] else "—"
            fits = "no limit" if r["fits"] is None else MEETS if r["fits"] else OVER
            limit = _limit(r["key"], r["limit"])
            lines.append(
                f"| {_row_name(r['key'], c['setting'])} | {limit} | {_value(r['key'], r['predicted'])} "
                f"| {_value(r['key'], r['measured'])} | {ratio} | {fits} |"
            )
        lines += ["", f"Measured: {c['runs']} timed calls ({c['source']})."]
        lines += [f"Note: {n}." for n in c["notes"]] + [""]
    return lines


def budget_metrics(c: dict) -> dict:
    """deploy.json's budget entries of one student: predicted and measured latency, limit, verdict."""
    lat = next(r for r in c["rows"] if r["key"] == "latency_ms")
    out = {"predicted_ms": round(lat["predicted"], 4), "measured_ms": round(lat["measured"], 4)}
    if lat["limit"]:
        out["budget_ms"] = lat["limit"]
    return out | {"meets_budget": c["verdict"] == MEETS}
