"""report: results/report.md, the curated deploy/seeds metrics, the PNG figures and the data files
behind dvc.yaml's top-level plots, all for the models params lists (no folder scan)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
import typer

from pipeline import checkpoint
from pipeline.bench import cpu_model
from pipeline.checks import load_params
from pipeline.errors import KdpipeError
from pipeline.evaluate import model_entries
from pipeline.report import (
    agreement_rows,
    deploy_metrics,
    read_json,
    seed_rows,
    seeds_metrics,
)
from pipeline.report_figures import write_figures
from pipeline.report_tables import ReportParts, build_markdown
from pipeline.select_budget import budget_metrics, compare
from stages import MODELS, RESULTS, command
from stages.evaluate import logits_path

METRICS = RESULTS / "metrics"


def load_logits(name: str) -> dict:
    """One model's test logits, labels and class names (written by evaluate)."""
    return checkpoint.load(logits_path(name), f"test logits of {name!r} (kdpipe evaluate writes them)")


@command("report")
def report(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path = typer.Option(RESULTS / "report.md", help="markdown report"),
) -> None:
    """Collect evaluate/export results and training histories into results/report.md, metrics and figures."""
    p = load_params(params)
    entries = model_entries(p)
    evaluation = read_json(RESULTS / "evaluate" / "models.json")
    missing = [e.name for e in entries if e.name not in evaluation]
    if missing:
        raise KdpipeError(
            f"results/evaluate/models.json has no {missing[0]!r} (listed in params); run kdpipe evaluate"
        )
    exports = {}
    for name in p.export.students:
        path = RESULTS / "export" / name / "metrics.json"
        if not path.is_file():
            raise KdpipeError(
                f"{path}: export metrics not found (export.students lists {name!r}); run kdpipe export {name}"
            )
        exports[name] = read_json(path)
    order = [e.name for e in entries] + [n for n in p.evaluate.ensembles if n in evaluation]
    evaluation = {n: evaluation[n] for n in order}  # only the models params lists, in params order

    chosen = [n for n in exports if p.students[n].arch == "selected"]  # the budget's students
    selected = read_json(MODELS / "selected.json") if chosen else {}
    budgets = {n: compare(selected, exports[n], n) for n in chosen}
    deploy = deploy_metrics(evaluation, exports)
    for n, c in budgets.items():
        deploy[n]["budget"] = budget_metrics(c)
    rows = seed_rows(entries, evaluation)
    for stem, metrics in (("deploy", deploy), ("seeds", seeds_metrics(rows))):
        checkpoint.atomic_write_text(METRICS / f"{stem}.json", json.dumps(metrics, indent=2))
    students = [e for e in entries if e.kind == "student"]
    agreement = agreement_rows(students, lambda name: load_logits(name)["logits"])
    best, figures = write_figures(entries, evaluation, exports, RESULTS, load_logits)

    data = read_json(RESULTS / "prepare-data" / "metrics.json")
    header = (
        f"# kdpipe report\n\nData: {p.data.source}, {data.get('train', '?')} training / "
        f"{data.get('val', '?')} validation / {data.get('test', '?')} test images; seed {p.base.seed}. "
        f"Machine: {cpu_model()} "
        f"({platform.machine()}), {torch.get_num_threads()} torch threads, torch {torch.__version__}."
    )
    text = build_markdown(ReportParts(header, evaluation, exports, rows, agreement, best, figures, budgets))
    checkpoint.atomic_write_text(out, text)
    sections = text.split("\n## ")
    typer.echo("\n## ".join(sections[:2]))  # the header and the models table; the rest is in the file
