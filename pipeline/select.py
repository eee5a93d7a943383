"""Pick the student architecture by a deployment budget measured on this machine (select-student stage).

Every candidate (pipeline.select_space) is built untrained from a fixed seed, its BatchNorm running
statistics are set from a few random batches (so activations, hence INT8 ranges, have a trained
net's scale), exported to ONNX (`select.exporter`: the TorchScript exporter by default, 0.2 s a
model, or `export_onnx`'s dynamo exporter as the export stage ships, 5-15 s a model on 2 busy cores;
their INT8 graphs have the same nodes but one Q/DQ pair and timed alike within noise), quantized
with the export stage's INT8 recipe when `precision` is int8, and timed under ONNX Runtime with
`bench.time_runs` (warm-up, then blocks of calls that take turns across the candidates of a group).
Latency does not depend on the weights' values or the images' content, so random weights and random
uint8 images measure the deployed cost.
Measurements are cached in a JSON file keyed by everything that changes them (candidate, exporter,
recipe, precision, batch, threads, runs, classes, channels, CPU model, onnxruntime and kdpipe
versions), so a new budget costs nothing; delete the file to measure again after a code change.
The default choice is the candidate with the most MACs (the accuracy proxy) that fits the budget,
ties going to fewer parameters.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline import bench, checkpoint
from pipeline.errors import KdpipeError
from pipeline.predict import INPUT, OUTPUT, make_session, resolve_threads
from pipeline.select_cache import cache_key, environment, load_cache, save_cache
from pipeline.select_export import deployable
from pipeline.select_space import Candidate, SelectParams, default_space, expand, violations

log = logging.getLogger(__name__)

GROUP = 8  # candidates timed together (their blocks take turns); bounds the ORT sessions open at once
Timer = Callable[..., dict]  # bench.time_runs(fns, warmup, runs) -> {name: {"p50_ms", "p90_ms", ...}}


def _time_group(
    group: list[Candidate], facts: dict, sp: SelectParams, recipe: dict, timer: Timer
) -> dict[str, dict]:
    """Rows (with p50/p90 ms) of the candidates of one group that built; a failed one gets an `error` row."""
    rows, fns = {}, {}
    with tempfile.TemporaryDirectory(prefix="kdpipe-select-") as tmp:
        for c in group:
            try:
                row, path = deployable(c, facts, sp, recipe, Path(tmp))
            except Exception as e:  # noqa: BLE001 - one arch that will not export or quantize must not stop the rest
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("candidate %s left out: %s", c.label, why)
                rows[c.label] = {"label": c.label, **c.key(), "error": why}
                continue
            sess, _ = make_session(path, sp.threads, "cpu")
            shape = (sp.batch_size, facts["in_channels"], c.input_size, c.input_size)
            x = np.random.default_rng(sp.seed).random(shape, dtype=np.float32)
            fns[c.label] = lambda s=sess, x=x: s.run([OUTPUT], {INPUT: x})
            rows[c.label] = row
        if fns:
            for label, t in timer(fns, sp.warmup, sp.runs).items():
                rows[label] |= {"p50_ms": float(t["p50_ms"]), "p90_ms": float(t["p90_ms"])}
    return rows


def measure(
    cands: list[Candidate],
    facts: dict,
    sp: SelectParams,
    recipe: dict,
    cache_path: str | Path | None = None,
    timer: Timer = bench.time_runs,
) -> list[dict]:
    """One row per candidate: params, macs, size_mb, p50_ms/p90_ms (or `error`), and `cached`.

    `facts`: {num_classes, in_channels} of the data; `recipe`: quantize_int8's keyword arguments (method,
    activation, weight, per_channel, fp32_stem) and `recipe`, export's choice (auto = the arch's family,
    a family, manual). The cache is saved after every group, so an interrupted run keeps what it measured.
    """
    path = Path(cache_path) if cache_path else None
    env = environment(sp, recipe, facts)
    entries = load_cache(path)
    keys = {c.label: cache_key(c, env) for c in cands}
    todo = [c for c in cands if keys[c.label] not in entries]
    log.info("%d candidates: %d cached, %d to measure", len(cands), len(cands) - len(todo), len(todo))
    fresh: dict[str, dict] = {}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(resolve_threads(sp.threads))  # export and calibration use the cores timing will use
    try:
        for i in range(0, len(todo), GROUP):
            got = _time_group(todo[i : i + GROUP], facts, sp, recipe, timer)
            fresh |= got
            entries |= {keys[k]: r for k, r in got.items() if "error" not in r}
            save_cache(path, entries)
            log.info(
                "measured %d/%d: %s",
                min(i + GROUP, len(todo)),
                len(todo),
                ", ".join(f"{k} {r['p50_ms']:.3f} ms" for k, r in got.items() if "p50_ms" in r),
            )
    finally:
        torch.set_num_threads(old_threads)
    return [
        fresh[c.label] | {"cached": False} if c.label in fresh else entries[keys[c.label]] | {"cached": True}
        for c in cands
    ]


def _budget_text(sp: SelectParams) -> str:
    b = sp.budget()
    parts = [
        f"{sp.latency_stat} <= {sp.latency_ms:g} ms at batch {sp.batch_size}, {sp.threads or 'all'} thread(s)"
        if sp.latency_ms
        else "",
        f"<= {sp.max_mb:g} MB" if "max_mb" in b else "",
        f"<= {sp.max_params:,} params" if "max_params" in b else "",
        f"<= {sp.max_macs:,.0f} MACs" if "max_macs" in b else "",
    ]
    return ", ".join(p for p in parts if p) or "no limit"


def choose(rows: list[dict], sp: SelectParams) -> dict:
    """The fitting row with the largest proxy (MACs or params), ties to fewer params, then lower latency.

    No fitting row is a KdpipeError naming the fastest candidate, its latency and the budget.
    """
    ok = [r for r in rows if "error" not in r]
    if not ok:
        raise KdpipeError(
            "no candidate could be exported and timed (see the warnings above); fix select.candidates"
        )
    stat = f"{sp.latency_stat}_ms"
    fit = [r for r in ok if not violations(r, sp)]
    if not fit:
        fast = min(ok, key=lambda r: r[stat])
        raise KdpipeError(
            f"no candidate fits the budget ({_budget_text(sp)}); the fastest, {fast['label']}, "
            f"takes {fast[stat]:.3f} ms ({fast['size_mb']:.2f} MB, {fast['params']:,} params): "
            "raise the budget or add smaller candidates to select.candidates"
        )
    return min(fit, key=lambda r: (-r[sp.proxy], r["params"], r[stat]))


def run_selection(
    facts: dict,
    sp: SelectParams,
    recipe: dict,
    out_dir: str | Path,
    selected_path: str | Path,
    cache_path: str | Path | None = None,
    timer: Timer = bench.time_runs,
) -> dict:
    """The select-student stage: measure the space, choose, write table.json, candidates.md, pareto.png and
    `selected_path`; returns selected.json's content. `facts`: {num_classes, in_channels, input_size}."""
    from pipeline.select_report import markdown, plot_pareto

    space = list(sp.candidates) or default_space(facts["input_size"])
    rows = measure(expand(space, facts["input_size"]), facts, sp, recipe, cache_path, timer)
    out = Path(out_dir)
    env = environment(sp, recipe, facts)
    for r in rows:
        r["fits"] = "error" not in r and not violations(r, sp)
    try:
        chosen = choose(rows, sp)
    except KdpipeError:
        chosen = None
    for r in rows:
        r["chosen"] = r is chosen
    table = {
        "budget": sp.budget(),
        "proxy": sp.proxy,
        "env": env,
        "chosen": chosen["label"] if chosen else None,
        "rows": rows,
    }
    checkpoint.atomic_write_text(out / "table.json", json.dumps(table, indent=2))
    checkpoint.atomic_write_text(out / "candidates.md", markdown(rows, sp, env, _budget_text(sp)))
    plot_pareto(rows, sp, out / "pareto.png", _budget_text(sp))
    c = choose(rows, sp)  # raises the one-line error, after the table and plot are written to look at
    selected = {
        "arch": c["arch"],
        "arch_kwargs": c["arch_kwargs"],
        "input_size": c["input_size"],
        "label": c["label"],
        "params": c["params"],
        "macs": c["macs"],
        "size_mb": c["size_mb"],
        "predicted_latency_ms": {"p50": c["p50_ms"], "p90": c["p90_ms"]},
        "budget": sp.budget(),
        "precision": sp.precision,
        "proxy": sp.proxy,
        "cpu": env["cpu"],
        "timed": {k: env[k] for k in ("batch_size", "threads", "runs", "warmup", "onnxruntime")},
    }
    checkpoint.atomic_write_text(Path(selected_path), json.dumps(selected, indent=2))
    return selected
