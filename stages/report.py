"""report: results/report.md with one row per model, seed statistics, deployment figures and plots."""
from __future__ import annotations

import platform
from pathlib import Path

import torch
import typer

from pipeline import checkpoint
from pipeline.bench import cpu_model
from pipeline.checks import load_params
from pipeline.report import build_report, read_history, read_json
from stages import RESULTS, command


@command("report")
def report(params: Path = typer.Option(Path("params.yaml"), help="params file"),
           out: Path = typer.Option(RESULTS / "report.md", help="markdown report")) -> None:
    """Collect evaluate/export metrics and training histories into results/report.md (+ PNG plots)."""
    p = load_params(params)
    evaluation = read_json(RESULTS / "evaluate" / "models.json")
    exports = {d.name: read_json(d / "metrics.json") for d in sorted((RESULTS / "export").glob("*")) if d.is_dir()}
    curves = {d.name: read_history(d / "plots" / "metrics" / "val" / "acc.tsv")
              for stage in ("train-teacher", "distill") for d in sorted((RESULTS / stage).glob("*")) if d.is_dir()}
    data = read_json(RESULTS / "prepare-data" / "metrics.json")
    header = (f"# kdpipe report\n\nData: {p.data.source}, {data.get('train', '?')} training / {data.get('val', '?')} validation / "
              f"{data.get('test', '?')} test images; seed {p.base.seed}. Machine: {cpu_model()} ({platform.machine()}), "
              f"{torch.get_num_threads()} torch threads, torch {torch.__version__}.")
    text = build_report(evaluation, exports, curves, out.parent, header)
    checkpoint.atomic_write_text(out, text)
    typer.echo(text.split("## Over seeds")[0].split("## Deployment")[0])
