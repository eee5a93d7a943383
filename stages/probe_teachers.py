"""probe-teachers: linear probes on each teacher's stages pick GPAC's teacher per layer (validation split)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.errors import KdpipeError
from pipeline.job_spec import RunPaths
from pipeline.jobs import run_knowledge
from pipeline.knowledge.probes import ProbesParams, load_probes, plot_heatmap
from pipeline.params import section
from stages import DATA, RESULTS, STATE, command, knowledge_path, say
from stages._layout import teacher_refs


@command("probe-teachers")
def probe_teachers(params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Train probes, write models/knowledge/probes.pt, results/probe-teachers/{metrics.json,heatmap.png}."""
    p = load_params(params)
    pp = section(p, "probes", ProbesParams)
    names = pp.teachers or list(p.teachers)
    for n in names:
        if "/" not in n and n not in p.teachers:  # `<section>/<name>` names another section's model
            raise KdpipeError(
                f"probes.teachers names {n!r}, which is not in params.teachers; fix probes.teachers"
            )
    if not names:
        raise KdpipeError("probes need at least one teacher; list them in probes.teachers")
    out = RESULTS / "probe-teachers"
    # per-epoch probe losses
    paths = RunPaths(knowledge_path("probes"), STATE / "probes" / "last.pt", out / "train")
    res = run_knowledge("probes_job", "probes", pp, teacher_refs(p, names), p.base, DATA, paths)
    if res is not None:  # under torchrun only rank 0 writes (and has measured the probes)
        checkpoint.atomic_write_text(out / "metrics.json", json.dumps(res.metrics, indent=2) + "\n")
        table = load_probes(res.artifact)
        plot_heatmap(table, out / "heatmap.png")
        say(
            "probe-teachers: "
            + ", ".join(f"stage[{l}]={names[c]}" for l, c in zip(table["layers"], table["choice"]))
        )
