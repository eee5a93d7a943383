"""refine-targets: train the professor (CAAE) on one frozen teacher's outputs (dvc.yaml runs it `foreach`
teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.job_spec import RunPaths
from pipeline.jobs import run_knowledge
from pipeline.knowledge.professor import ProfessorParams
from pipeline.params import section
from stages import DATA, RESULTS, STATE, command, knowledge_path, say
from stages._layout import teacher_refs


@command("refine-targets")
def refine_targets(
    teacher: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Train the professor of TEACHER: artifact, cached refined targets and
    results/refine-targets/<n>/metrics.json."""
    p = load_params(params)
    refs, key = teacher_refs(p, [teacher]), teacher.rpartition("/")[2]
    out = RESULTS / "refine-targets" / key
    paths = RunPaths(knowledge_path("professor", teacher), STATE / "professor" / key / "last.pt", out)
    res = run_knowledge(
        "professor_job", teacher, section(p, "professor", ProfessorParams), refs, p.base, DATA, paths
    )
    if res is None:  # under torchrun only rank 0 writes (and has measured the refined targets)
        return
    summary = res.metrics | {"resumed_from_epoch": res.fit.resumed_from}
    # replaces dvclive's summary
    checkpoint.atomic_write_text(out / "metrics.json", json.dumps(summary, indent=4) + "\n")
    m, nan = summary.get("val", {}), float("nan")
    say(
        f"professor {teacher}: refined val top-1 {m.get('refined_top1', nan):.4f} (teacher "
        f"{m.get('teacher_top1', nan):.4f}), KL {m.get('kl_refined_teacher', nan):.4f} -> {res.artifact}"
    )
