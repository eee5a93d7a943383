"""select-student's readable outputs: the candidates table (markdown) and the MACs-vs-latency Pareto plot."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.select_space import SelectParams, violations

log = logging.getLogger(__name__)

PROXY_NAMES = {"macs": "MACs", "params": "parameters"}


def pareto(rows: list[dict], stat: str) -> list[dict]:
    """Rows no other row beats on both axes (more MACs and less latency), fastest first."""
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: (r[stat], -r["macs"]))
    front, best = [], -1
    for r in ok:
        if r["macs"] > best:
            front.append(r)
            best = r["macs"]
    return front


def markdown(rows: list[dict], sp: SelectParams, env: dict, budget: str) -> str:
    """One row per candidate, largest proxy first; the chosen one in bold, misfits say why."""

    stat = f"{sp.latency_stat}_ms"
    lines = [
        "# select-student candidates",
        "",
        f"Budget: {budget}. {sp.precision.upper()} ONNX, ORT on {env['cpu']}, batch {sp.batch_size}, "
        f"{env['threads']} thread(s), {sp.warmup} warm-up + {sp.runs} timed calls each; "
        "untrained weights (latency does not depend on them). "
        f"Choice: the most {PROXY_NAMES[sp.proxy]} that fits, ties to fewer params.",
        "",
        "| candidate | params | MMACs | size MB | p50 ms | p90 ms | fits |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    order = sorted(rows, key=lambda r: (-r.get(sp.proxy, -1), r.get("params", 0), r.get(stat, 0.0)))
    for r in order:
        if "error" in r:
            lines.append(f"| {r['label']} | – | – | – | – | – | left out: {r['error']} |")
            continue
        why = violations(r, sp)
        fits = "**chosen**" if r.get("chosen") else ("yes" if not why else "no: " + "; ".join(why))
        name = f"**{r['label']}**" if r.get("chosen") else r["label"]
        lines.append(
            f"| {name} | {r['params']:,} | {r['macs'] / 1e6:.2f} | {r['size_mb']:.3f} | "
            f"{r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {fits} |"
        )
    return "\n".join(lines) + "\n"


# label positions tried in turn, in points from the marker: beside it (above right, above left, below right,
# below left: a label never starts beside a neighbour it does not name), centred above/below, then further out
OFFSETS = [
    (7, 4),
    (-7, 4),
    (7, -11),
    (-7, -11),
    (0, 8),
    (0, -16),
    (7, 14),
    (7, -21),
    (-7, 14),
    (-7, -21),
    (0, 18),
    (0, -26),
    (7, 24),
    (7, -31),
    (-7, 24),
    (-7, -31),
    (0, 28),
    (0, -36),
]
FAR = 6  # offsets from this index on get a leader line to their point


def _labels(fig, ax, rows: list[dict], must: list[dict], stat: str) -> None:
    """Candidate names next to their points, each at the first offset whose text stays inside the axes and
    overlaps no other label, marker or the legend (greedy: the `must` rows first). A `must` row (chosen,
    Pareto front) that fits nowhere takes the first offset; any other is left to the table."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    pad = 5  # pixels around a marker kept free of text
    taken = [
        Bbox.from_extents(x - pad, y - pad, x + pad, y + pad)
        for x, y in ax.transData.transform([(r[stat], r["macs"]) for r in rows])
    ]
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent(renderer))
    firsts = {id(r) for r in must}
    for r in sorted(rows, key=lambda r: (not r.get("chosen"), id(r) not in firsts, r[stat])):
        style = {
            "fontsize": 8,
            "fontweight": "bold" if r.get("chosen") else "normal",
            "bbox": {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},  # over lines
        }
        for i, (dx, dy) in enumerate(OFFSETS):
            lead = {"arrowprops": {"arrowstyle": "-", "lw": 0.5, "color": "gray"}} if i >= FAR else {}
            ann = ax.annotate(
                r["label"],
                (r[stat], r["macs"]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                **style,
                **lead,
            )
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text alone, without its leader line
            if (
                inside.contains(box.x0, box.y0)
                and inside.contains(box.x1, box.y1)
                and not any(box.overlaps(t) for t in taken)
            ):
                taken.append(box)
                break
            ann.remove()
        else:
            if id(r) in firsts:
                ax.annotate(
                    r["label"], (r[stat], r["macs"]), textcoords="offset points", xytext=OFFSETS[0], **style
                )


def _plain_ticks(axis, values: list[float]) -> None:
    """Ticks at 1-2-5 steps labelled as plain numbers: within a decade, matplotlib's log labels collide."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = min(values), max(values)
    steps = [m * 10.0**e for e in range(-4, 5) for m in (1, 2, 5)]
    axis.set_major_locator(FixedLocator([t for t in steps if lo / 2 <= t <= hi * 2]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_pareto(rows: list[dict], sp: SelectParams, out: Path, budget: str) -> None:
    """MACs (accuracy proxy) vs latency, log-log: the candidates, Pareto front, budget lines, the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline import checkpoint

    stat = f"{sp.latency_stat}_ms"
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return
    fits = [r for r in ok if not violations(r, sp)]
    other = [r for r in ok if violations(r, sp)]
    chosen = [r for r in ok if r.get("chosen")]
    front = pareto(ok, stat)
    fig, ax = plt.subplots(figsize=(9, 6) if len(ok) <= 30 else (12, 8))  # room for every label
    ax.plot(
        [r[stat] for r in front],
        [r["macs"] for r in front],
        color="tab:blue",
        lw=1,
        alpha=0.4,
        label="Pareto front (most MACs for the latency)",
    )
    if fits:
        ax.scatter(
            [r[stat] for r in fits],
            [r["macs"] for r in fits],
            s=36,
            color="tab:blue",
            zorder=3,
            label="fits the budget",
        )
    if other:
        ax.scatter(
            [r[stat] for r in other],
            [r["macs"] for r in other],
            s=36,
            facecolors="none",
            edgecolors="tab:gray",
            zorder=3,
            label="outside the budget",
        )
    if sp.latency_ms:
        ax.axvline(
            sp.latency_ms, color="tab:red", ls="--", lw=1.2, label=f"latency budget {sp.latency_ms:g} ms"
        )
    if sp.max_macs:
        ax.axhline(sp.max_macs, color="tab:orange", ls=":", lw=1.2, label=f"MACs budget {sp.max_macs:,.0f}")
    for r in chosen:
        ax.scatter(
            [r[stat]],
            [r["macs"]],
            s=280,
            marker="*",
            color="tab:red",
            edgecolors="black",
            zorder=4,
            label=f"chosen: {r['label']}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax.xaxis, [r[stat] for r in ok])
    threads = f"{sp.threads} thread(s)" if sp.threads else "all cores"
    ax.set_xlabel(
        f"{sp.latency_stat} latency per call, ms (batch {sp.batch_size}, {sp.precision.upper()} "
        f"ONNX Runtime, {threads})"
    )
    ax.set_ylabel("MACs per image (accuracy proxy)")
    ax.set_title(f"select-student: {len(ok)} candidates; budget: {budget}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")  # the empty corner: no candidate is both fast and large
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    fig.tight_layout()
    fig.canvas.draw()  # final limits and layout, so label boxes are measured where they will be drawn
    _labels(fig, ax, ok, front + chosen, stat)
    with checkpoint.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    log.info("Pareto plot: %s", out)
