"""The report stage's work: read evaluate/export results for the models params lists, write the curated
deploy/seeds metrics and the figures, and return results/report.md's text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.evaluate import model_entries
from pipeline.params import Params
from pipeline.params import model_entries as expanded_entries
from pipeline.report import agreement_rows, deploy_metrics, read_json, seed_rows, seeds_metrics
from pipeline.report_figures import write_figures
from pipeline.report_tables import ReportParts, build_markdown, header
from pipeline.select_budget import budget_metrics, compare


def _exports(p: Params, results: Path) -> dict[str, dict]:
    exports = {}
    for name in p.export.students:
        path = results / "export" / name / "metrics.json"
        if not path.is_file():
            raise KdpipeError(
                f"{path}: export metrics not found (export.students lists {name!r}); run kdpipe export {name}"
            )
        exports[name] = read_json(path)
    return exports


def build_report(p: Params, results: Path, models: Path, load_logits: Callable[[str], dict]) -> str:
    """Write results/metrics/{deploy,seeds}.json and the figures; return the report's markdown.
    `load_logits(name)` gives one model's test logits, labels and class names (written by evaluate)."""
    entries = model_entries(p)
    evaluation = read_json(results / "evaluate" / "models.json")
    missing = [e.name for e in entries if e.name not in evaluation]
    if missing:
        raise KdpipeError(
            f"results/evaluate/models.json has no {missing[0]!r} (listed in params); run kdpipe evaluate"
        )
    exports = _exports(p, results)
    order = [e.name for e in entries] + [n for n in p.evaluate.ensembles if n in evaluation]
    evaluation = {n: evaluation[n] for n in order}  # only the models params lists, in params order

    chosen = [n for n in exports if p.students[n].arch == "selected"]  # the budget's students
    selected = read_json(models / "selected.json") if chosen else {}
    budgets = {n: compare(selected, exports[n], n) for n in chosen}
    deploy = deploy_metrics(evaluation, exports)
    for n, c in budgets.items():
        deploy[n]["budget"] = budget_metrics(c)
    rows = seed_rows(entries, evaluation)
    for stem, metrics in (("deploy", deploy), ("seeds", seeds_metrics(rows))):
        checkpoint.atomic_write_text(results / "metrics" / f"{stem}.json", json.dumps(metrics, indent=2))
    students = [e for e in entries if e.kind == "student"]
    agreement = agreement_rows(students, lambda name: load_logits(name)["logits"])
    best, figures = write_figures(entries, evaluation, exports, results, load_logits)

    counts = read_json(results / "prepare-data" / "metrics.json")
    top = header(p.data.source, counts, p.base.seed)
    own = {}  # train_subset -> models trained on that many images
    for _, name, spec in expanded_entries(p):
        names = own.setdefault(spec.train_subset, []) if spec.train_subset else []
        if (spec.group or name) not in names and spec.train_subset:
            names.append(spec.group or name)
    if own:
        top += (
            " Trained on fewer images (train_subset, the same images for each number): "
            + "; ".join(f"{n}: {', '.join(names)}" for n, names in own.items())
            + "."
        )
    return build_markdown(ReportParts(top, evaluation, exports, rows, agreement, best, figures, budgets))
