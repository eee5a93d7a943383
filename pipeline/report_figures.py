"""The report's figures and the data files behind dvc.yaml's top-level plots, for the models params lists."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from pipeline import checkpoint, plots
from pipeline.evaluate import Entry, confusion_rows
from pipeline.report import confusion_counts, curve_panels, latency, read_history

log = logging.getLogger(__name__)
STAGE_DIR = {
    "teachers": "train-teacher",
    "patriarchs": "train-teacher",  # where dvclive wrote each history
    "students": "distill",
    "generations": "distill",
}
CAPTIONS = {
    "acc_latency.png": "accuracy vs latency",
    "students.png": "students: training curves",
    "teachers.png": "teachers: training curves",
    "confusion_best.png": "confusion matrix of the best student",
}


def curves(entries: list[Entry], who: str, results: Path) -> bool:
    """<results>/plots/<who>.png and plots/data/<who>_{val_acc,train_loss}.csv; False if no figure."""
    if not entries:
        return False

    def history(e: Entry, metric: str) -> tuple[list[int], list[float]]:
        """One model's per-epoch values of `metric` (e.g. val/acc) as dvclive wrote them."""
        return read_history(results / STAGE_DIR[e.section] / e.name / "plots" / "metrics" / f"{metric}.tsv")

    panels, tables = curve_panels(entries, history)
    for stem, text in tables.items():
        checkpoint.atomic_write_text(results / "plots" / "data" / f"{who}_{stem}.csv", text)
    missing = [e.name for e in entries if not history(e, "val/acc")[0]]
    if missing:
        log.warning(
            "no training history for %s under results/<stage>/<name>/plots/metrics", ", ".join(missing)
        )
    if not any(panels.values()):
        return False
    title = f"{who.capitalize()}: validation top-1 and training loss"
    plots.plot_curves(panels, title, results / "plots" / f"{who}.png")
    return True


def best_by_validation(students: list[Entry], results: Path) -> str:
    """The student with the highest last-epoch validation top-1 (the test split never picks anything);
    "" when no student has a validation history."""
    scored = []
    for e in students:
        _, acc = read_history(
            results / STAGE_DIR[e.section] / e.name / "plots" / "metrics" / "val" / "acc.tsv"
        )
        if acc:
            scored.append((acc[-1], e.name))
    return max(scored)[1] if scored else ""


def write_figures(
    entries: list[Entry], evaluation: dict, exports: dict, results: Path, load_logits: Callable[[str], dict]
) -> tuple[str, dict[str, str]]:
    """Training curves, the best student's confusion matrix and accuracy vs latency; returns (best student,
    {caption: path relative to the report})."""
    out = results / "plots"
    students = [e for e in entries if e.kind == "student"]
    teachers = [e for e in entries if e.kind == "teacher"]
    made = {
        "students.png": curves(students, "students", results),
        "teachers.png": curves(teachers, "teachers", results),
    }
    best = best_by_validation(students, results)
    if best:
        saved = load_logits(best)
        names, y, pred = saved["class_names"], saved["labels"], saved["logits"].argmax(1)
        title = f"Best student by validation, {best}: test top-1 {100 * evaluation[best]['top1']:.2f} %"
        plots.plot_confusion(confusion_counts(y, pred, len(names)), names, title, out / "confusion_best.png")
        made["confusion_best.png"] = True
        rows = confusion_rows(saved["logits"], y, names)
        checkpoint.atomic_write_text(out / "data" / "confusion_best.json", json.dumps(rows))
    points = [
        plots.Point(name, prec, lat, ex["top1"][prec])
        for name, ex in exports.items()
        for runtime, prec in (("ort_fp32", "fp32"), ("ort_int8", "int8"))
        if (lat := latency(ex, runtime)) is not None and prec in ex.get("top1", {})
    ]
    if points:  # teachers are never exported: their top-1 is drawn as a reference line
        references = {e.name: evaluation[e.name]["top1"] for e in teachers if e.name not in exports}
        plots.plot_acc_latency(points, references, out / "acc_latency.png")
        made["acc_latency.png"] = True
    return best, {caption: f"plots/{png}" for png, caption in CAPTIONS.items() if made.get(png)}
