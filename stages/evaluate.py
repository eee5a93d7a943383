"""evaluate: test-split top-1/top-5/NLL/ECE, confusion data and test logits of every model params lists
(teachers, patriarchs, students, generations) and of every configured ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.ensemble import ensemble_jobs
from pipeline.evaluate import (
    accuracy_metrics,
    confusion_rows,
    evaluate_models,
    model_entries,
    model_jobs,
    require_artifacts,
)
from stages import DATA, MODELS, RESULTS, command, model_path

OUT = RESULTS / "evaluate"
ACCURACY = RESULTS / "metrics" / "accuracy.json"  # the declared metrics file: {model: {top1, top5, ece, nll}}


def logits_path(name: str) -> Path:
    """Test logits of one model (with labels and class names), read by the report for agreement/KL."""
    return OUT / "logits" / f"{name}.pt"


@command("evaluate")
def evaluate(params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Evaluate every model params lists (models/<section>/<name>.pt) and each ensemble on the test split."""
    p = load_params(params)
    entries = model_entries(p)
    paths = [MODELS / e.section / f"{e.name}.pt" for e in entries]
    require_artifacts(paths)
    from pipeline.data.cache import load_prepared  # heavy: only when evaluating (the report needs the paths)
    from pipeline.runtime import prepare

    device = prepare(p.base.device, p.base.threads, p.base.seed)[0]  # base.device and base.threads
    data, results = load_prepared(DATA), {}
    jobs = model_jobs(entries, paths) + ensemble_jobs(p.evaluate.ensembles, model_path)
    for name, metrics, logits in evaluate_models(
        jobs, data, p.evaluate.batch_size, p.evaluate.ece_bins, device
    ):
        results[name] = metrics
        saved = {"logits": logits, "labels": data["test_y"], "class_names": list(data["class_names"])}
        checkpoint.save(saved, logits_path(name))
        rows = confusion_rows(logits, data["test_y"], data["class_names"])
        checkpoint.atomic_write_text(OUT / "confusion" / f"{name}.json", json.dumps(rows))
    checkpoint.atomic_write_text(ACCURACY, json.dumps(accuracy_metrics(results), indent=2))
    checkpoint.atomic_write_text(OUT / "models.json", json.dumps(results, indent=2))  # with descriptions
    for name, m in results.items():
        typer.echo(
            f"{name:24s} top-1 {100 * m['top1']:6.2f}%  top-5 {100 * m['top5']:6.2f}%  ECE {m['ece']:.3f}"
        )
