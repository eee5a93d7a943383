"""Markdown of results/report.md: models, seeds, teacher-student agreement and deployment tables."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field

import torch

from pipeline.bench import cpu_model
from pipeline.report import SeedRow, informative, latency
from pipeline.select_budget import budget_section


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` decimals; an em dash when absent."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def header(source: str, counts: dict, seed: int) -> str:
    """The report's first lines: data, split sizes (`counts` from prepare-data's metrics), seed, machine."""
    return (
        f"# kdpipe report\n\nData: {source}, {counts.get('train', '?')} training / "
        f"{counts.get('val', '?')} validation / {counts.get('test', '?')} test images; seed {seed}. "
        f"Machine: {cpu_model()} "
        f"({platform.machine()}), {torch.get_num_threads()} torch threads, torch {torch.__version__}."
    )


def models_table(evaluation: dict[str, dict], exports: dict[str, dict]) -> list[str]:
    """Markdown rows: model, kind, method, arch, teachers, params, size, top-1, top-5, NLL, ECE, INT8."""
    rows = [
        (
            "| model | kind | method | arch | teachers / targets | params | size MB | test top-1 % "
            "| top-5 % | NLL | ECE | INT8 top-1 % | ORT INT8 p50 ms (b=1) |"
        ),
        "|---" * 13 + "|",
    ]
    for name, m in evaluation.items():
        ex = exports.get(name, {})
        lat = latency(ex, "ort_int8")
        rows.append(
            f"| {name} | {m.get('kind', '')} | {m.get('method', '')} | {m.get('arch', '')} "
            f"| {m.get('sources', '')} | {m.get('params', 0):,} | {m.get('size_mb', 0):.2f} "
            f"| {pct(m['top1'])} | {pct(m['top5'])} "
            f"| {m['nll']:.3f} | {m['ece']:.3f} | {pct(ex.get('top1', {}).get('int8'))} "
            f"| {f'{lat:.3f}' if lat else '—'} |"
        )
    return rows


def seeds_table(rows: list[SeedRow]) -> list[str]:
    """Markdown rows: mean ± std over seeds; against the paired baseline Δ, its 95 % CI and the verdict."""
    out = [
        (
            "| model | kind | seeds | test top-1 % (mean ± std) | baseline | Δ top-1 (points) | 95 % CI "
            "| verdict |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.summary
        acc = pct(s.mean) + (f" ± {100 * s.std:.2f}" if s.std is not None else "")
        delta, ci, verdict = _delta(r.paired)
        out.append(
            f"| {r.group} | {r.kind} | {s.n} | {acc} | {r.baseline or '—'} | {delta} | {ci} | {verdict} |"
        )
    return out


def _delta(p) -> tuple[str, str, str]:
    """(Δ, CI, verdict) cells of a paired difference, in points."""
    if p is None:
        return "—", "—", "—"
    ci = f"[{100 * p.ci_low:+.2f}, {100 * p.ci_high:+.2f}]" if p.ci_low is not None else "—"
    return f"{100 * p.delta:+.2f}", ci, p.verdict


def root_table(rows: list[SeedRow]) -> list[str]:
    """Rows whose baseline has a baseline itself, against the end of that chain (scratch)."""
    out = [
        "| model | baseline chain | seeds | Δ top-1 (points) | 95 % CI | verdict |",
        "|---|---|---|---|---|---|",
    ]
    chain = {r.group: r.baseline for r in rows}
    for r in rows:
        if r.vs_root is None:
            continue
        links, g = [r.group], r.group
        while chain.get(g) and chain[g] not in links:
            g = chain[g]
            links.append(g)
        delta, ci, verdict = _delta(r.vs_root)
        out.append(f"| {r.group} | {' → '.join(links)} | {r.vs_root.n} | {delta} | {ci} | {verdict} |")
    return out


def agreement_table(rows: list[tuple[str, str, float, float]]) -> list[str]:
    """Markdown rows (student, teacher, top-1 agreement, KL(teacher || student) in nats) on the test set."""
    out = ["| student | teacher | top-1 agreement % | KL(teacher ‖ student), nats |", "|---|---|---|---|"]
    return out + [f"| {s} | {t} | {pct(a)} | {kl:.4f} |" for s, t, a, kl in rows]


def deploy_table(exports: dict[str, dict]) -> list[str]:
    """Markdown rows per exported model and precision: size, top-1, ORT p50 at batch 1 and 64, throughput."""
    out = [
        "| model | precision | size MB | test top-1 % | p50 ms b=1 | p50 ms b=64 | images/s b=64 |",
        "|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for name, ex in exports.items():
        for runtime, prec in (("ort_fp32", "fp32"), ("ort_int8", "int8")):
            lat = ex.get("latency", {}).get(runtime, {})
            b1, b64 = lat.get("b1", {}), lat.get("b64", {})
            size = ex.get("size_bytes", {}).get(prec, 0) / 2**20
            out.append(
                f"| {name} | {prec} | {size:.2f} | {pct(ex.get('top1', {}).get(prec))} "
                f"| {b1.get('p50_ms', nan):.3f} | {b64.get('p50_ms', nan):.2f} "
                f"| {b64.get('images_per_s', nan):.0f} |"
            )
    return out


@dataclass(frozen=True)
class ReportParts:
    """What the markdown report is built from; figure paths are relative to the report's folder."""

    header: str
    evaluation: dict[str, dict]
    exports: dict[str, dict]
    seeds: list[SeedRow]
    agreement: list[tuple[str, str, float, float]]
    best_student: str
    figures: dict[str, str]  # caption -> relative PNG path, in display order
    budgets: dict[str, dict] = field(default_factory=dict)  # student -> select_budget.compare(...)


def build_markdown(parts: ReportParts) -> str:
    """The text of results/report.md."""
    lines = [
        parts.header,
        "",
        "## Models (test split, last epoch)",
        "",
        *models_table(parts.evaluation, parts.exports),
        "",
    ]
    if informative(parts.seeds):
        lines += [
            "## Over seeds (test top-1, last epoch)",
            "",
            (
                "Mean ± sample std over a model's seeds; Δ = model − baseline over matching seeds, "
                "95 % CI from Student's t on the per-seed differences; *better*/*worse* only when the CI "
                "excludes 0."
            ),
            "",
            *seeds_table(informative(parts.seeds)),
            "",
        ]
    if any(r.vs_root is not None for r in parts.seeds):
        first = next(r.root for r in parts.seeds if r.vs_root is not None)
        lines += [
            f"Rows compared with another student above, against the end of their baseline chain ({first}):",
            "",
            *root_table(parts.seeds),
            "",
        ]
    if parts.agreement:
        lines += ["## Teacher–student agreement (test split)", "", *agreement_table(parts.agreement), ""]
    if parts.exports:
        lines += ["## Deployment (ONNX Runtime, CPU)", "", *deploy_table(parts.exports), ""]
    lines += budget_section(parts.budgets)
    if parts.best_student:
        lines += [
            f"Best student by last-epoch validation top-1: **{parts.best_student}** (its test confusion "
            "matrix below).",
            "",
        ]
    lines += [f"![{caption}]({path})" for caption, path in parts.figures.items()]
    return "\n".join(lines) + "\n"
