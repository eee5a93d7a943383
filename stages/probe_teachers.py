"""probe-teachers: linear probes on each teacher's stages pick GPAC's teacher per layer (validation split)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.params import section, to_dict
from pipeline.checks import load_params
from pipeline.probes import ProbesParams, plot_heatmap, probe_metrics, run_probes
from pipeline.runner import check_teacher, fingerprint, load_data
from pipeline.runtime import prepare
from pipeline.tracking import LiveTracker
from stages import DATA, KNOWLEDGE, RESULTS, STATE, command, model_path, say


@command("probe-teachers")
def probe_teachers(params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Train probes, write models/knowledge/probes.pt, results/probe-teachers/{metrics.json,heatmap.png}."""
    p = load_params(params)
    pp = section(p, "probes", ProbesParams)
    names = pp.teachers or list(p.teachers)
    for n in names:
        if "/" not in n and n not in p.teachers:  # `<section>/<name>` names another section's model
            raise KdpipeError(f"probes.teachers names {n!r}, which is not in params.teachers; fix probes.teachers")
    data = load_data(DATA)
    teachers, shas = [], {}
    for n in names:
        model, art = checkpoint.load_model(model_path(n))
        check_teacher(art, data, n)
        teachers.append(model)
        shas[n] = checkpoint.sha256(model_path(n))
    device = prepare(p.base.device, p.base.threads, p.base.seed)[0]
    out = RESULTS / "probe-teachers"
    fp = fingerprint(to_dict(pp), p.base.seed, shas, data["train_y"].shape[0], data["source"])
    tracker = LiveTracker(out / "train")  # per-epoch probe losses; val/acc = mean-probe ensemble
    result = run_probes(teachers, names, data, pp, device, seed=p.base.seed, tracker=tracker,
                        state_path=STATE / "probes" / "last.pt", fingerprint=fp)
    tracker.close({})
    checkpoint.save(result | {"sha256": shas, "params": to_dict(pp)}, KNOWLEDGE / "probes.pt")
    checkpoint.atomic_write_text(out / "metrics.json", json.dumps(probe_metrics(result), indent=2) + "\n")
    plot_heatmap(result, out / "heatmap.png")
    chosen = ", ".join(f"stage[{l}]={names[c]}" for l, c in zip(result["layers"], result["choice"]))
    say(f"probe-teachers: {chosen}")
