"""report: results/report.md, the curated deploy/seeds metrics, the PNG figures and the data files
behind dvc.yaml's top-level plots, all for the models params lists (no folder scan)."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import torch
import typer

from pipeline import checkpoint, plots
from pipeline.bench import cpu_model
from pipeline.checks import load_params
from pipeline.errors import KdpipeError
from pipeline.evaluate import Entry, confusion_rows, model_entries
from pipeline.report import (
    agreement_rows,
    confusion_counts,
    curve_panels,
    deploy_metrics,
    latency,
    read_history,
    read_json,
    seed_rows,
    seeds_metrics,
)
from pipeline.report_tables import ReportParts, build_markdown
from stages import RESULTS, command
from stages.evaluate import logits_path

log = logging.getLogger(__name__)
METRICS, PLOTS = RESULTS / "metrics", RESULTS / "plots"
STAGE_DIR = {
    "teachers": "train-teacher",
    "patriarchs": "train-teacher",  # where dvclive wrote each history
    "students": "distill",
    "generations": "distill",
}


def history(e: Entry, metric: str) -> tuple[list[int], list[float]]:
    """One model's per-epoch values of `metric` (e.g. val/acc) as dvclive wrote them in its training stage."""
    return read_history(RESULTS / STAGE_DIR[e.section] / e.name / "plots" / "metrics" / f"{metric}.tsv")


def load_logits(name: str) -> dict:
    return checkpoint.load(logits_path(name), f"test logits of {name!r} (kdpipe evaluate writes them)")


def curves(entries: list[Entry], who: str) -> bool:
    """results/plots/<who>.png and results/plots/data/<who>_{val_acc,train_loss}.csv; False if no figure."""
    if not entries:
        return False
    panels, tables = curve_panels(entries, history)
    for stem, text in tables.items():
        checkpoint.atomic_write_text(PLOTS / "data" / f"{who}_{stem}.csv", text)
    missing = [e.name for e in entries if not history(e, "val/acc")[0]]
    if missing:
        log.warning(
            "no training history for %s under results/<stage>/<name>/plots/metrics", ", ".join(missing)
        )
    if not any(panels.values()):
        return False
    plots.plot_curves(panels, f"{who.capitalize()}: validation top-1 and training loss", PLOTS / f"{who}.png")
    return True


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

    rows = seed_rows(entries, evaluation)
    for stem, metrics in (("deploy", deploy_metrics(evaluation, exports)), ("seeds", seeds_metrics(rows))):
        checkpoint.atomic_write_text(METRICS / f"{stem}.json", json.dumps(metrics, indent=2))
    students = [e for e in entries if e.kind == "student"]
    teachers = [e for e in entries if e.kind == "teacher"]
    agreement = agreement_rows(students, lambda name: load_logits(name)["logits"])

    made = {"students.png": curves(students, "students"), "teachers.png": curves(teachers, "teachers")}
    best = max(students, key=lambda e: evaluation[e.name]["top1"]).name if students else ""
    if best:
        saved = load_logits(best)
        names, y, pred = saved["class_names"], saved["labels"], saved["logits"].argmax(1)
        plots.plot_confusion(
            confusion_counts(y, pred, len(names)),
            names,
            f"Best student {best}: test top-1 {100 * evaluation[best]['top1']:.2f} %",
            PLOTS / "confusion_best.png",
        )
        made["confusion_best.png"] = True
        checkpoint.atomic_write_text(
            PLOTS / "data" / "confusion_best.json", json.dumps(confusion_rows(saved["logits"], y, names))
        )
    points = [
        plots.Point(name, prec, lat, ex["top1"][prec])
        for name, ex in exports.items()
        for runtime, prec in (("ort_fp32", "fp32"), ("ort_int8", "int8"))
        if (lat := latency(ex, runtime)) is not None and prec in ex.get("top1", {})
    ]
    if points:  # teachers are never exported: their top-1 is drawn as a reference line
        references = {e.name: evaluation[e.name]["top1"] for e in teachers if e.name not in exports}
        plots.plot_acc_latency(points, references, PLOTS / "acc_latency.png")
        made["acc_latency.png"] = True
    captions = {
        "acc_latency.png": "accuracy vs latency",
        "students.png": "students: training curves",
        "teachers.png": "teachers: training curves",
        "confusion_best.png": "confusion matrix of the best student",
    }
    figures = {caption: f"plots/{png}" for png, caption in captions.items() if made.get(png)}

    data = read_json(RESULTS / "prepare-data" / "metrics.json")
    header = (
        f"# kdpipe report\n\nData: {p.data.source}, {data.get('train', '?')} training / "
        f"{data.get('val', '?')} validation / {data.get('test', '?')} test images; seed {p.base.seed}. "
        f"Machine: {cpu_model()} "
        f"({platform.machine()}), {torch.get_num_threads()} torch threads, torch {torch.__version__}."
    )
    text = build_markdown(ReportParts(header, evaluation, exports, rows, agreement, best, figures))
    checkpoint.atomic_write_text(out, text)
    sections = text.split("\n## ")
    typer.echo("\n## ".join(sections[:2]))  # the header and the models table; the rest is in the file
