"""distill: train one student named in params with its method and knowledge sources (foreach student)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.errors import KdpipeError
from pipeline.params import load_params
from pipeline.runner import RunPaths, load_data, train_model
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, model_path, targets_path


@command("distill")
def distill(name: str = typer.Argument(..., help="student name (a key of params.students)"),
            params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Distil a student; resumes from state/students/<name>/last.pt when it matches the params."""
    p = load_params(params)
    if name not in p.students:
        raise KdpipeError(f"no student {name!r} in {params}; known: {', '.join(p.students) or 'none'}")
    spec = p.students[name]
    for t in spec.teachers:
        if t not in p.teachers and t.removeprefix("students/") not in p.students:
            raise KdpipeError(f"student {name!r} names teacher {t!r}, which is in neither teachers nor students; fix students.{name}.teachers")
    paths = RunPaths(MODELS / "students" / f"{name}.pt", STATE / "students" / name / "last.pt", RESULTS / "distill" / name)
    res = train_model(name, "student", spec, p.base, load_data(DATA), paths, LiveTracker,
                      teacher_paths=[model_path(t) for t in spec.teachers],
                      target_paths=[targets_path(t) for t in spec.teachers])
    typer.echo(f"student {name}: val top-1 {res.final.get('val/acc', float('nan')):.4f}" + (f" (resumed at epoch {res.resumed_from})" if res.resumed_from else ""))
