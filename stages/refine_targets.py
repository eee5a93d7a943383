"""refine-targets: train the professor (CAAE) on one frozen teacher's outputs (dvc.yaml runs it `foreach` teacher)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.params import MODEL_SECTIONS, section
from pipeline.checks import load_params
from pipeline.professor import ProfessorParams, ProfessorPaths, targets_file, train_professor
from pipeline.runner import check_teacher, load_data
from pipeline.tracking import LiveTracker
from stages import DATA, KNOWLEDGE, RESULTS, STATE, command, model_path, say


def professor_path(teacher: str) -> Path:
    """models/knowledge/professor/<n>.pt (what knowledge_assets hands distill); refined logits go to <n>.targets.pt."""
    return KNOWLEDGE / "professor" / f"{teacher.rpartition('/')[2]}.pt"


@command("refine-targets")
def refine_targets(teacher: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
                   params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Train the professor of TEACHER: artifact, cached refined targets and results/refine-targets/<n>/metrics.json."""
    p = load_params(params)
    sec, _, key = teacher.rpartition("/")
    if (sec or "teachers") not in MODEL_SECTIONS or key not in getattr(p, sec or "teachers"):
        raise KdpipeError(f"no teacher {teacher!r} in {params}; name a key of teachers, or <section>/<name> "
                          f"(known teachers: {', '.join(p.teachers) or 'none'})")
    pp = section(p, "professor", ProfessorParams)
    path, data = model_path(teacher), load_data(DATA)
    model, art = checkpoint.load_model(path)
    check_teacher(art, data, teacher)
    out = professor_path(teacher)
    paths = ProfessorPaths(out, targets_file(out), STATE / "professor" / key / "last.pt", RESULTS / "refine-targets" / key)
    m = train_professor(teacher, model, checkpoint.sha256(path), data, pp, p.base, paths, LiveTracker).get("val", {})
    nan = float("nan")
    say(f"professor {teacher}: refined val top-1 {m.get('refined_top1', nan):.4f} (teacher {m.get('teacher_top1', nan):.4f}), "
        f"KL {m.get('kl_refined_teacher', nan):.4f} -> {out}")
