"""train-teacher: train one teacher (or patriarch) named in params (dvc.yaml runs it `foreach`)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.checks import load_params
from pipeline.errors import KdpipeError
from pipeline.job_inputs import load_data
from pipeline.job_spec import RunPaths, model_job
from pipeline.jobs import run_job
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, say
from stages._layout import KIND


@command("train-teacher")
def train_teacher(
    name: str = typer.Argument(..., help="teacher name (a key of params.teachers, or of --section)"),
    section: str = typer.Option("teachers", help="params section: teachers | patriarchs"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Train a teacher from labels; resumes from state/<section>/<name>/last.pt when it matches the params."""
    p = load_params(params)
    models = getattr(p, section, None) if section in ("teachers", "patriarchs") else None
    if models is None or name not in models:
        raise KdpipeError(
            f"no {section} entry {name!r} in {params}; known: {', '.join(models or {}) or 'none'}"
        )
    spec = models[name]
    if spec.teachers:
        raise KdpipeError(
            f"{section}.{name} lists teachers; teachers learn from labels only, so move it to students"
        )
    paths = RunPaths(
        MODELS / section / f"{name}.pt", STATE / section / name / "last.pt", RESULTS / "train-teacher" / name
    )
    res = run_job(model_job(name, KIND[section], spec), p.base, load_data(DATA), paths, LiveTracker).fit
    resumed = f" (resumed at epoch {res.resumed_from})" if res.resumed_from else ""
    say(f"{section} {name}: val top-1 {res.final.get('val/acc', float('nan')):.4f}{resumed}")
