"""export: one student -> ONNX fp32 (parity-checked) + INT8, test top-1 and latency (dvc.yaml runs it
`foreach`); a student of `arch: selected` is also timed as select-student timed its candidates."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.data.cache import load_prepared as load_data
from pipeline.errors import KdpipeError
from pipeline.export import export_student, summary
from pipeline.parity import to_unit
from pipeline.select_budget import measure_as_selected
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
    art, data = MODELS / "students" / f"{name}.pt", load_data(DATA)
    files = {"fp32": MODELS / "export" / f"{name}.onnx", "int8": MODELS / "export" / f"{name}.int8.onnx"}
    metrics = export_student(art, data, files["fp32"], files["int8"], p.export, provider)
    if p.select is not None and p.students[name].arch == "selected":
        images = to_unit(data["test_x"][: p.select.batch_size])
        metrics["budget_timing"] = measure_as_selected(art, files, images, p.select, metrics)
    checkpoint.atomic_write_text(RESULTS / "export" / name / "metrics.json", json.dumps(metrics, indent=2))
    typer.echo(summary(name, metrics, max(p.export.batch_sizes)))
