"""export: one student -> ONNX fp32 (parity-checked) + INT8, test top-1 and latency (dvc.yaml runs it
`foreach`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.data.cache import load_prepared as load_data
from pipeline.errors import KdpipeError
from pipeline.export import export_student
from stages import DATA, MODELS, RESULTS, command


@command("export")
def export(
    name: str = typer.Argument(..., help="student name (a key of params.students)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    provider: str = typer.Option(
        "auto", help="ONNX Runtime provider: auto (CUDA if it really starts, else CPU) | cpu | cuda"
    ),
) -> None:
    """Export a student to models/export/<name>.onnx and .int8.onnx; metrics in
    results/export/<name>/metrics.json."""
    p = load_params(params)
    if name not in p.students:
        raise KdpipeError(f"no student {name!r} in {params}; known: {', '.join(p.students) or 'none'}")
    if p.export.students and name not in p.export.students:
        raise KdpipeError(
            f"student {name!r} is not in export.students {p.export.students}; add it there or empty the list "
            "(= all)"
        )
    if provider not in ("auto", "cpu", "cuda"):
        raise KdpipeError(f"--provider {provider!r}: choose auto, cpu or cuda")
    out = MODELS / "export"
    metrics = export_student(
        MODELS / "students" / f"{name}.pt",
        load_data(DATA),
        out / f"{name}.onnx",
        out / f"{name}.int8.onnx",
        p.export,
        provider,
    )
    checkpoint.atomic_write_text(RESULTS / "export" / name / "metrics.json", json.dumps(metrics, indent=2))
    lat = metrics["latency"]
    b = f"b{max(p.export.batch_sizes)}"
    typer.echo(
        f"export {name}: test top-1 fp32 {metrics['top1']['fp32']:.4f}, int8 {metrics['top1']['int8']:.4f} "
        f"({100 * metrics['int8_delta']:+.2f} points); p50 at batch {b[1:]}: torch "
        f"{lat['torch_fp32'][b]['p50_ms']:.2f} ms, "
        f"ORT fp32 {lat['ort_fp32'][b]['p50_ms']:.2f} ms, INT8 {lat['ort_int8'][b]['p50_ms']:.2f} ms "
        f"[{metrics['env']['provider_used']}]; INT8 recipe {metrics['recipe']}, validation drop "
        f"{_drop(metrics)}"
    )


def _drop(m: dict) -> str:
    if m["int8_within_budget"] is None:
        return "not measured (no validation split)"
    return f"{m['int8_val_drop_points']:.2f} points" + (
        "" if m["int8_within_budget"] else " (over export.int8_max_drop)"
    )
