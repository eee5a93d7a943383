"""refine-targets: train the professor (CAAE) on one frozen teacher's outputs (dvc.yaml runs it `foreach` teacher)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.params import load_params, section
from pipeline.professor import ProfessorParams, ProfessorPaths, targets_file, train_professor
from pipeline.runner import check_teacher, load_data
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, model_path


def professor_path(teacher: str) -> Path:
    """models/professor/<teacher>.pt; the cached refined logits are models/professor/<teacher>.targets.pt."""
    return MODELS / "professor" / f"{teacher}.pt"


@command("refine-targets")
def refine_targets(teacher: str = typer.Argument(..., help="teacher name (a key of params.teachers, or students/<name>)"),
                   params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Write models/professor/<teacher>.pt, its cached refined targets and results/refine-targets/<teacher>/metrics.json."""
    p = load_params(params)
    if teacher not in p.teachers and teacher.removeprefix("students/") not in p.students:
        raise KdpipeError(f"no teacher {teacher!r} in {params}; known: {', '.join(p.teachers) or 'none'}")
    pp = section(p, "professor", ProfessorParams)
    path, data = model_path(teacher), load_data(DATA)
    model, art = checkpoint.load_model(path)
    check_teacher(art, data, teacher)
    out = professor_path(teacher)
    paths = ProfessorPaths(out, targets_file(out), STATE / "professor" / teacher / "last.pt",
                           RESULTS / "refine-targets" / teacher)
    m = train_professor(teacher, model, checkpoint.sha256(path), data, pp, p.base, paths, LiveTracker)
    val = m.get("val", {})
    typer.echo(f"professor {teacher}: refined val top-1 {val.get('refined_top1', float('nan')):.4f} "
               f"(teacher {val.get('teacher_top1', float('nan')):.4f}), KL {val.get('kl_refined_teacher', float('nan')):.4f} -> {out}")
