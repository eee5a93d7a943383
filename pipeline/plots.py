"""The report's PNG figures (matplotlib, Agg backend): training curves, a confusion matrix and
accuracy against latency. Every line has its own colour and marker; legends sit outside the axes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Curve:
    """One line of a training-curve panel; `band` is a (low, high) pair per x for a seed spread."""

    label: str
    xs: list[int]
    ys: list[float]
    band: tuple[list[float], list[float]] | None = None


@dataclass(frozen=True)
class Point:
    """One (latency, accuracy) point of the deployment figure."""

    model: str
    precision: str  # "fp32" | "int8"
    latency_ms: float
    top1: float  # fraction


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_styles(n: int) -> list[dict]:
    """Colour, marker and line style for n lines: tab10 up to 10 lines, tab20 beyond, markers and
    (after 10 lines) line styles cycling, so no two lines look alike."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    colours = [cmap(i % cmap.N) for i in range(n)]
    styles = itertools.cycle(LINESTYLES) if n > 10 else itertools.repeat("-")
    return [
        {"color": c, "marker": m, "linestyle": s}
        for c, m, s in zip(colours, itertools.cycle(MARKERS), styles)
    ]


def _outlying(values: list[float]) -> bool:
    """True when the largest magnitude is over 8x the median one (a linear axis would flatten the rest)."""
    mags = sorted(abs(v) for v in values)
    return bool(mags) and mags[-1] > 8 * max(mags[len(mags) // 2], 1e-12)


def plot_curves(panels: dict[str, list[Curve]], title: str, out: Path) -> None:
    """Side-by-side panels (e.g. validation top-1 and training loss) against the integer epoch, one
    legend for all panels to the right of the axes."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    labels = list(dict.fromkeys(c.label for curves in panels.values() for c in curves))
    style = dict(zip(labels, line_styles(len(labels))))
    once = {k for k, cs in panels.items() if len({x for c in cs for x in c.xs}) == 1}  # validated once
    tall = max([len(panels[k]) for k in once], default=0) * 0.17 + 1.2  # inches for one row per model
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), max(4.2, tall)), squeeze=False)
    for ax, (ylabel, curves) in zip(axes[0], panels.items()):
        if ylabel in once:  # one epoch (eval_every): a dot per model, named on the y axis, not a line
            _dots(ax, curves, style, f"{ylabel}, epoch {curves[0].xs[0]}")
            continue
        for c in curves:
            ax.plot(c.xs, c.ys, label=c.label, ms=4, lw=1.4, **style[c.label])
            if c.band is not None:
                ax.fill_between(c.xs, *c.band, color=style[c.label]["color"], alpha=0.12, lw=0)
        ax.set(xlabel="epoch", ylabel=ylabel)
        if _outlying([y for c in curves for y in c.ys]):
            ax.set_yscale("symlog", linthresh=1.0)  # a loss far off the rest (e.g. IE-KD's negative terms)
            ylabel += " (symlog)"
            ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a label missing from the first panel still gets its legend entry
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.suptitle(title)
    fig.tight_layout()
    # the legend hangs off the figure's right edge; savefig(bbox_inches="tight") widens the canvas to it
    fig.legend(
        handles,
        names,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        frameon=False,
        ncol=1 if len(names) <= 18 else 2,
    )
    _save(fig, out, plt)


def _dots(ax, curves: list[Curve], style: dict, xlabel: str) -> None:
    """One value per curve as a dot (with its band as an error bar), curves top to bottom."""
    for i, c in enumerate(curves):
        err = None if c.band is None else [[c.ys[0] - c.band[0][0]], [c.band[1][0] - c.ys[0]]]
        st = style[c.label]
        ax.errorbar(
            c.ys[0], i, xerr=err, color=st["color"], marker=st["marker"], ms=5, capsize=2, label=c.label
        )
    ax.set_yticks(range(len(curves)), [c.label for c in curves], fontsize=7)
    ax.set_ylim(len(curves) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")


def plot_confusion(counts: list[list[int]], class_names: list[str], title: str, out: Path) -> None:
    """Heat map of row-normalised counts (each true class sums to 100 %), percentages written in the cells."""
    plt = _pyplot()
    import numpy as np

    m = np.asarray(counts, dtype=float)
    pct = 100 * m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(class_names)
    side = min(k, 20)  # beyond 20 classes (CIFAR-100) the figure stops growing and the cells go unlabelled
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * side, 0.8 + 0.55 * side))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    font = 8 if k <= 20 else max(3, int(160 / k))
    ax.set_xticks(
        range(k),
        class_names,
        rotation=40 if k <= 20 else 90,
        ha="right" if k <= 20 else "center",
        fontsize=font,
    )
    ax.set_yticks(range(k), class_names, fontsize=font)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    for i in range(k):
        for j in range(k):
            if k <= 20 and pct[i, j] >= 0.5:  # cells that would print as 0 stay blank
                ax.text(
                    j,
                    i,
                    f"{pct[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if pct[i, j] > 60 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    _save(fig, out, plt)


def plot_acc_latency(points: list[Point], references: dict[str, float], out: Path) -> None:
    """Test top-1 against ONNX Runtime p50 latency at batch 1: a colour per model, ○ fp32 and ■ INT8
    joined by a thin line; models without latency (teachers that were not exported) are dotted
    horizontal lines at their top-1. No text on the axes, so labels never overlap."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(p.model for p in points))
    colours = [s["color"] for s in line_styles(len(models) + len(references))]
    colour = dict(zip([*models, *references], colours))
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    for model in models:
        mine = sorted((p for p in points if p.model == model), key=lambda p: p.precision)
        ax.plot(
            [p.latency_ms for p in mine], [100 * p.top1 for p in mine], color=colour[model], lw=0.8, alpha=0.6
        )
        for p in mine:
            ax.scatter(
                p.latency_ms,
                100 * p.top1,
                s=55,
                color=colour[model],
                zorder=3,
                marker="s" if p.precision == "int8" else "o",
                facecolors=colour[model] if p.precision == "int8" else "white",
                linewidths=1.6,
            )
    for name, top1 in references.items():
        ax.axhline(100 * top1, color=colour[name], ls=":", lw=1.3)
    handles = [Line2D([], [], color=colour[m], marker="o", ls="-", lw=0.8, label=m) for m in models]
    handles += [Line2D([], [], color=colour[n], ls=":", lw=1.3, label=f"{n} (teacher)") for n in references]
    handles += [
        Line2D([], [], color="grey", marker="o", mfc="white", ls="", label="fp32 (ORT)"),
        Line2D([], [], color="grey", marker="s", ls="", label="INT8 (ORT)"),
    ]
    note = "dotted: teacher top-1 (not exported, no latency)" if references else None
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        fontsize=8,
        frameon=False,
        title=note,
        title_fontsize=8,
        alignment="left",
    )
    ax.set(
        xlabel="ONNX Runtime p50 latency, batch 1 (ms), lower is better",
        ylabel="test top-1 (%)",
        title="Accuracy vs latency (CPU)",
    )
    ax.set_xlim(0, 1.15 * max(p.latency_ms for p in points))
    ax.margins(y=0.08)
    ax.grid(alpha=0.3)
    _save(fig, out, plt)


def _save(fig, out: Path, plt) -> None:
    from pipeline.checkpoint import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
