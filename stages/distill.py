"""distill: train one student (or one generation) with its method and knowledge sources (dvc foreach)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.checks import load_params
from pipeline.errors import KdpipeError
from pipeline.job_inputs import load_data
from pipeline.job_spec import RunPaths, model_job
from pipeline.jobs import run_job
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, knowledge_assets, say, targets_path
from stages._layout import KIND, teacher_refs


@command("distill")
def distill(
    name: str = typer.Argument(..., help="model name (a key of params.students, or of --section)"),
    section: str = typer.Option("students", help="params section: students | generations"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Distil a student; resumes from state/<section>/<name>/last.pt when it matches the params."""
    p = load_params(params)
    models = getattr(p, section, None) if section in ("students", "generations") else None
    if models is None or name not in models:
        raise KdpipeError(
            f"no {section} entry {name!r} in {params}; known: {', '.join(models or {}) or 'none'}"
        )
    spec = models[name]
    paths = RunPaths(
        MODELS / section / f"{name}.pt", STATE / section / name / "last.pt", RESULTS / "distill" / name
    )
    job = model_job(
        name,
        KIND[section],
        spec,
        teachers=teacher_refs(p, spec.teachers),
        targets=[targets_path(t) for t in spec.teachers],
        assets=knowledge_assets(spec),
    )
    res = run_job(job, p.base, load_data(DATA), paths, LiveTracker).fit
    resumed = f" (resumed at epoch {res.resumed_from})" if res.resumed_from else ""
    say(f"{section} {name}: val top-1 {res.final.get('val/acc', float('nan')):.4f}{resumed}")
