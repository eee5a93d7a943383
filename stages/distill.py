"""distill: train one student (or one generation) with its method and knowledge sources (dvc foreach)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.checks import load_params
from pipeline.runner import RunPaths, load_data, train_model
from pipeline.tracking import LiveTracker
from stages import DATA, MODELS, RESULTS, STATE, command, say, knowledge_assets, model_path, targets_path


@command("distill")
def distill(name: str = typer.Argument(..., help="model name (a key of params.students, or of --section)"),
            section: str = typer.Option("students", help="params section: students | generations"),
            params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Distil a student; resumes from state/<section>/<name>/last.pt when it matches the params."""
    p = load_params(params)
    models = getattr(p, section, None) if section in ("students", "generations") else None
    if models is None or name not in models:
        raise KdpipeError(f"no {section} entry {name!r} in {params}; known: {', '.join(models or {}) or 'none'}")
    spec = models[name]
    paths = RunPaths(MODELS / section / f"{name}.pt", STATE / section / name / "last.pt", RESULTS / "distill" / name)
    assets = knowledge_assets(spec)
    # stage-made knowledge is part of the run's identity: new probes/professor/factor never resume old state
    flat = [x for v in assets.values() for x in (v if isinstance(v, list) else [v])]
    used = [checkpoint.sha256(v) for v in flat if isinstance(v, Path) and v.is_file()]
    res = train_model(name, "student", spec, p.base, load_data(DATA), paths, LiveTracker,
                      teacher_paths=[model_path(t) for t in spec.teachers],
                      target_paths=[targets_path(t) for t in spec.teachers], assets=assets, extra_fingerprint=used)
    resumed = f" (resumed at epoch {res.resumed_from})" if res.resumed_from else ""
    say(f"{section} {name}: val top-1 {res.final.get('val/acc', float('nan')):.4f}{resumed}")
