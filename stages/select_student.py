"""select-student: time candidate students on this CPU; pick the largest that fits the deployment budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.checks import load_params
from pipeline.data.cache import load_prepared
from pipeline.params import section
from pipeline.select import run_selection
from pipeline.select_space import SelectParams
from stages import DATA, MODELS, RESULTS, STATE, command, say

OUT = RESULTS / "select-student"  # table.json, candidates.md, pareto.png
SELECTED = MODELS / "selected.json"  # read by pipeline.select.resolve_selected for `arch: selected`
CACHE = STATE / "select-student" / "cache.json"  # measurements kept across runs (a persistent DVC output)


@command("select-student")
def select_student(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    cache: Annotated[Path, typer.Option(help="measurement cache (JSON)")] = CACHE,
) -> None:
    """Measure params, MACs, size and ORT latency of each candidate; write models/selected.json, a table."""
    p = load_params(params)
    sp = getattr(p, "select", None) or section(p, "select", SelectParams)
    data = load_prepared(DATA)  # memory-mapped: only the class names and the images' shape are read
    n, x = len(data["class_names"]), data["train_x"]
    facts = {"num_classes": n, "in_channels": int(x.shape[1]), "input_size": int(x.shape[-1])}
    e = p.export  # the export stage's INT8 recipe, so the timed model is the one export will ship
    recipe = {
        "recipe": e.recipe,
        "method": e.calib_method,
        "activation": e.activation_type,
        "weight": e.weight_type,
        "per_channel": e.per_channel,
        "fp32_stem": e.fp32_stem,
    }
    sel = run_selection(facts, sp, recipe, OUT, SELECTED, cache)
    lat = sel["predicted_latency_ms"]
    say(
        f"select-student: {sel['label']} ({sel['params']:,} params, {sel['macs'] / 1e6:.2f} MMACs, "
        f"{sel['size_mb']:.2f} MB, p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms) -> {SELECTED}; "
        f"table: {OUT / 'candidates.md'}"
    )
