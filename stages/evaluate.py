"""evaluate: test-split top-1/top-5/NLL/ECE and confusion data for every teacher, student and ensemble."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.evaluate import confusion_rows, evaluate_model
from pipeline.params import MODEL_SECTIONS, load_params
from pipeline.jobs import load_data
from stages import DATA, MODELS, RESULTS, command, model_path


@command("evaluate")
def evaluate(params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Evaluate every model artifact under models/teachers and models/students on the test split."""
    p = load_params(params)
    data = load_data(DATA)
    out_dir = RESULTS / "evaluate"
    models = {f.stem: f for kind in MODEL_SECTIONS for f in sorted((MODELS / kind).glob("*.pt"))}
    results = {}
    for name, path in models.items():
        model, meta = checkpoint.load_model(path)
        results[name], logits = evaluate_model(model, meta, data, p.evaluate.batch_size, p.evaluate.ece_bins)
        rows = confusion_rows(logits, data["test_y"], data["class_names"])
        checkpoint.atomic_write_text(out_dir / "confusion" / f"{name}.json", json.dumps(rows))
    for name, members in p.evaluate.ensembles.items():
        from pipeline.ensemble import load_ensemble  # only needed when ensembles are configured

        model, meta = load_ensemble([model_path(m) for m in members], name=name)
        results[name], _ = evaluate_model(model, meta, data, p.evaluate.batch_size, p.evaluate.ece_bins)
        results[name].update(kind="ensemble", method="mean softmax", sources=", ".join(members))
    numbers = {n: {k: v for k, v in m.items() if isinstance(v, (int, float))} for n, m in results.items()}
    checkpoint.atomic_write_text(out_dir / "metrics.json", json.dumps(numbers, indent=2))  # for dvc metrics
    checkpoint.atomic_write_text(out_dir / "models.json", json.dumps(results, indent=2))  # with descriptions, for the report
    for name, m in results.items():
        typer.echo(f"{name:24s} top-1 {100 * m['top1']:6.2f}%  top-5 {100 * m['top5']:6.2f}%  ECE {m['ece']:.3f}")
