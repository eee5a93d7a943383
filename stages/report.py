"""report: results/report.md, the curated deploy/seeds metrics, the PNG figures and the data files
behind dvc.yaml's top-level plots, all for the models params lists (no folder scan)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.report_build import build_report
from stages import MODELS, RESULTS, command
from stages.evaluate import logits_path


def load_logits(name: str) -> dict:
    """One model's test logits, labels and class names (written by evaluate)."""
    return checkpoint.load(logits_path(name), f"test logits of {name!r} (kdpipe evaluate writes them)")


@command("report")
def report(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path = typer.Option(RESULTS / "report.md", help="markdown report"),
) -> None:
    """Collect evaluate/export results and training histories into results/report.md, metrics and figures."""
    text = build_report(load_params(params), RESULTS, MODELS, load_logits)
    checkpoint.atomic_write_text(out, text)
    sections = text.split("\n## ")
    typer.echo("\n## ".join(sections[:2]))  # the header and the models table; the rest is in the file
