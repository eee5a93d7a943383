"""The dvc.yaml sections that go with the report: top-level `metrics`, `plots` and `artifacts` for the
models params lists, as plain data for the dvc.yaml generator to dump."""

from __future__ import annotations

from pipeline.evaluate import Entry

METRICS = ["results/metrics/accuracy.json", "results/metrics/deploy.json", "results/metrics/seeds.json"]
DATA = "results/plots/data"
PANELS = (("val_acc", "validation top-1 (%)"), ("train_loss", "training loss"))


def _overlay(title: str, path: str, columns: list[str], y_label: str) -> dict:
    """One overlay plot: a line per column of a wide CSV (`template: overlay` in .dvc/plots)."""
    return {
        title: {
            "template": "overlay",
            "x": "epoch",
            "y": {path: list(columns)},
            "x_label": "epoch",
            "y_label": y_label,
        }
    }


def plots_section(entries: list[Entry], exported: list[str]) -> list:
    """Training curves of students and of teachers (validation top-1, training loss), the best student's
    confusion matrix and, with exports, the accuracy-vs-latency figure."""
    out: list = []
    for who, kind in (("students", "student"), ("teachers", "teacher")):
        names = [e.name for e in entries if e.kind == kind]
        if names:
            out += [
                _overlay(f"{who.capitalize()}: {label}", f"{DATA}/{who}_{stem}.csv", names, label)
                for stem, label in PANELS
            ]
    if any(e.kind == "student" for e in entries):
        out.append(
            {
                "Best student (by validation): confusion matrix (test split)": {
                    "template": "confusion",
                    "x": "predicted",
                    "y": {f"{DATA}/confusion_best.json": "actual"},
                    "x_label": "predicted class",
                    "y_label": "true class",
                }
            }
        )
    if exported:
        out.append("results/plots/acc_latency.png")
    return out


def artifacts_section(entries: list[Entry], exported: list[str]) -> dict:
    """A DVC model artifact per trained model and per exported ONNX file (fp32 and INT8)."""
    by_name = {e.name: e for e in entries}
    out = {}
    for e in entries:
        sources = ", ".join(t.rpartition("/")[2] for t in e.teachers)
        desc = f"{e.kind} {e.arch}, method {e.method}" + (f", taught by {sources}" if sources else "")
        out[e.name] = {
            "path": f"models/{e.section}/{e.name}.pt",
            "type": "model",
            "desc": desc,
            "labels": [e.kind, f"method:{e.method}", f"arch:{e.arch}"],
        }
    for name in exported:
        e = by_name.get(name)
        labels = [f"method:{e.method}", f"arch:{e.arch}"] if e else []
        out[f"{name}-onnx"] = {
            "path": f"models/export/{name}.onnx",
            "type": "model",
            "desc": f"{name} as ONNX, fp32",
            "labels": ["onnx", "fp32", *labels],
        }
        out[f"{name}-int8"] = {
            "path": f"models/export/{name}.int8.onnx",
            "type": "model",
            "desc": f"{name} as ONNX, INT8 (static QDQ)",
            "labels": ["onnx", "int8", *labels],
        }
    return out


def dvc_sections(entries: list[Entry], exported: list[str]) -> dict:
    """{"metrics": [...], "plots": [...], "artifacts": {...}} for dvc.yaml."""
    return {
        "metrics": list(METRICS),
        "plots": plots_section(entries, exported),
        "artifacts": artifacts_section(entries, exported),
    }
