"""The results report: curated metrics files (accuracy, deploy, seeds), markdown tables and the data
behind the figures. Inputs are plain dicts read by the stage; nothing here decides a path."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.evaluate import ACCURACY_KEYS, DIGITS, Entry, accuracy_metrics  # noqa: F401 - re-exported
from pipeline.evaluate import rounded as _r
from pipeline.plots import Curve
from pipeline.stats import Paired, Summary, kl_teacher_student, paired_difference, summarize, top1_agreement


def read_json(path: Path) -> dict:
    """A JSON file as a dict; {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_history(tsv: Path) -> tuple[list[int], list[float]]:
    """A dvclive history file (`step` = epoch, then the value column) as (epochs, values)."""
    xs: list[int] = []
    ys: list[float] = []
    if tsv.is_file():
        with tsv.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                value = row[next(k for k in row if k not in ("step", "timestamp"))]
                xs.append(int(float(row["step"])))
                ys.append(float(value))
    return xs, ys


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def latency(ex: dict, runtime: str) -> float | None:
    """ORT p50 ms at batch 1 from an export metrics dict, None if absent."""
    return ex.get("latency", {}).get(runtime, {}).get("b1", {}).get("p50_ms")


def deploy_metrics(evaluation: dict[str, dict], exports: dict[str, dict]) -> dict[str, dict]:
    """{model: {params, mb}} for every model, plus INT8 size/top-1 and ORT batch-1 p50 latencies (ms)
    for the exported ones. mb = fp32 weights in MiB."""
    out = {}
    for name, m in evaluation.items():
        row = {"params": int(m.get("params", 0)), "mb": round(m.get("size_mb", 0.0), 3)}
        ex = exports.get(name)
        if ex:
            row.update(
                _drop_none(
                    {
                        "int8_mb": round(ex.get("size_bytes", {}).get("int8", 0) / 2**20, 3),
                        "int8_top1": _r(ex.get("top1", {}).get("int8")),
                        "fp32_p50_ms_b1": _r(latency(ex, "ort_fp32")),
                        "int8_p50_ms_b1": _r(latency(ex, "ort_int8")),
                    }
                )
            )
        out[name] = row
    return out


@dataclass(frozen=True)
class SeedRow:
    """A seed group: its members' test top-1 summary and, with a baseline, the paired difference."""

    group: str
    kind: str
    members: list[str]
    summary: Summary
    baseline: str = ""  # group of the paired baseline models
    paired: Paired | None = None
    root: str = ""  # group at the end of the baseline chain (scratch), when the baseline has a baseline
    vs_root: Paired | None = None  # the paired difference to `root` over matching seeds


def seed_rows(entries: list[Entry], evaluation: dict[str, dict]) -> list[SeedRow]:
    """One row per group in params order (ensembles are not grouped)."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    group_of = {e.name: e.group for e in entries}
    baseline_of = {e.name: e.baseline for e in entries if e.baseline in evaluation}

    def root(name: str) -> str:  # the end of the baseline chain (`seen` stops at a loop of baselines)
        seen = {name}
        while baseline_of.get(name) and baseline_of[name] not in seen:
            name = baseline_of[name]
            seen.add(name)
        return name

    rows = []
    for group, members in groups.items():
        top1 = [evaluation[e.name]["top1"] for e in members]
        paired_with = [e for e in members if e.name in baseline_of]
        pairs = [(evaluation[e.name]["top1"], evaluation[e.baseline]["top1"]) for e in paired_with]
        baseline = group_of.get(paired_with[0].baseline, paired_with[0].baseline) if paired_with else ""
        far = [e for e in paired_with if root(e.name) != e.baseline]
        far_pairs = [(evaluation[e.name]["top1"], evaluation[root(e.name)]["top1"]) for e in far]
        rows.append(
            SeedRow(
                group,
                members[0].kind,
                [e.name for e in members],
                summarize(top1),
                baseline,
                paired_difference(pairs) if pairs else None,
                group_of.get(root(far[0].name), "") if far else "",
                paired_difference(far_pairs) if far_pairs else None,
            )
        )
    return rows


def informative(rows: list[SeedRow]) -> list[SeedRow]:
    """Groups with several seeds or a baseline: a single unpaired seed says nothing beyond accuracy.json."""
    return [r for r in rows if r.summary.n > 1 or r.paired is not None]


def seeds_metrics(rows: list[SeedRow]) -> dict[str, dict]:
    """{group: {mean, std, n, delta, ci_low, ci_high, verdict}} for the informative groups."""
    out = {}
    for r in informative(rows):
        row = {"mean": _r(r.summary.mean), "std": _r(r.summary.std), "n": r.summary.n}
        if r.paired is not None:
            row.update(
                delta=_r(r.paired.delta),
                ci_low=_r(r.paired.ci_low),
                ci_high=_r(r.paired.ci_high),
                verdict=r.paired.verdict,
            )
        if r.vs_root is not None:
            q = r.vs_root
            row.update(
                root=r.root, root_delta=_r(q.delta), root_ci_low=_r(q.ci_low), root_ci_high=_r(q.ci_high)
            )
            row["root_verdict"] = q.verdict
        out[r.group] = _drop_none(row)
    return out


def wide_csv(series: dict[str, tuple[list[int], list[float]]], scale: float = 1.0, digits: int = 4) -> str:
    """CSV with an `epoch` column and one column per model (empty where a model has no value):
    the layout DVC overlays as one line per column (`y: {file: [model, ...]}`)."""
    epochs = sorted({x for xs, _ in series.values() for x in xs})
    lookup = {name: dict(zip(xs, ys)) for name, (xs, ys) in series.items()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch", *series])
    for ep in epochs:
        w.writerow([ep, *(f"{scale * lookup[n][ep]:.{digits}f}" if ep in lookup[n] else "" for n in series)])
    return buf.getvalue()


Series = tuple[list[int], list[float]]  # (epochs, values) of one model


def mean_curve(curves: list[Series]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, minimum and maximum over seeds at the epochs every seed has: (epochs, mean, low, high)."""
    common = sorted(set.intersection(*(set(xs) for xs, _ in curves)))
    cols = [[dict(zip(xs, ys))[ep] for xs, ys in curves] for ep in common]
    return common, [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


# metric: (axis label, scale, digits, file stem)
CURVES = {
    "val/acc": ("validation top-1 (%)", 100.0, 2, "val_acc"),
    "train/loss": ("training loss", 1.0, 4, "train_loss"),
}
History = Callable[[Entry, str], tuple[list[int], list[float]]]


def curve_panels(entries: list[Entry], history: History) -> tuple[dict[str, list[Curve]], dict[str, str]]:
    """Per CURVES metric: the figure panel (one line per model, or per seed group as the mean with a
    min-max band when seeds repeat) and the wide CSV of every model for `dvc plots`, by file stem."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    seeded = any(len(m) > 1 for m in groups.values())
    panels, tables = {}, {}
    for metric, (label, scale, digits, stem) in CURVES.items():
        series = {e.name: history(e, metric) for e in entries}
        series = {n: s for n, s in series.items() if s[0]}
        tables[stem] = wide_csv(series, scale, digits)
        curves = []
        for group, members in groups.items():
            mine = [series[e.name] for e in members if e.name in series]
            if seeded and len(mine) > 1:
                xs, mean, lo, hi = mean_curve(mine)
                curves.append(
                    Curve(
                        f"{group} (mean of {len(mine)} seeds)",
                        xs,
                        [scale * y for y in mean],
                        ([scale * y for y in lo], [scale * y for y in hi]),
                    )
                )
            else:
                curves += [
                    Curve(e.name, series[e.name][0], [scale * y for y in series[e.name][1]])
                    for e in members
                    if e.name in series
                ]
        panels[label] = curves
    return panels, tables


def confusion_counts(labels: torch.Tensor, pred: torch.Tensor, k: int) -> list[list[int]]:
    """counts[true][predicted] over k classes."""
    return torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k).tolist()


def agreement_rows(
    students: list[Entry], logits: Callable[[str], torch.Tensor]
) -> list[tuple[str, str, float, float]]:
    """(student, teacher, top-1 agreement, KL(teacher || student)) per student and each of its teachers."""
    rows = []
    for s in students:
        for t in s.teachers:
            tname = t.rpartition("/")[2]  # <section>/<name> or a bare teacher name
            st, tt = logits(s.name), logits(tname)
            rows.append((s.name, tname, top1_agreement(tt, st), kl_teacher_student(tt, st)))
    return rows
