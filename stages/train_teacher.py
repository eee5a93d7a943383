"""train-teacher: train one teacher named in params (dvc.yaml runs it `foreach` teacher)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.errors import KdpipeError
from pipeline.params import load_params
from pipeline.runner import RunPaths, load_data, train_model
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, model_path


@command("train-teacher")
def train_teacher(name: str = typer.Argument(..., help="teacher name (a key of params.teachers)"),
                  params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Train a teacher; resumes from state/teachers/<name>/last.pt when it matches the params."""
    p = load_params(params)
    if name not in p.teachers:
        raise KdpipeError(f"no teacher {name!r} in {params}; known: {', '.join(p.teachers) or 'none'}")
    spec = p.teachers[name]
    paths = RunPaths(MODELS / "teachers" / f"{name}.pt", STATE / "teachers" / name / "last.pt", RESULTS / "train-teacher" / name)
    res = train_model(name, "teacher", spec, p.base, load_data(DATA), paths, LiveTracker,
                      teacher_paths=[model_path(t) for t in spec.teachers])
    typer.echo(f"teacher {name}: val top-1 {res.final.get('val/acc', float('nan')):.4f}" + (f" (resumed at epoch {res.resumed_from})" if res.resumed_from else ""))
