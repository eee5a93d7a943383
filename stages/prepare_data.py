"""prepare-data: read the configured source, hold out validation, write uint8 tensors + metadata."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.data import prepare, summary
from pipeline.checks import load_params
from stages import DATA, RESULTS, command


@command("prepare-data")
def prepare_data(params: Path = typer.Option(Path("params.yaml"), help="params file"),
                 out: Path = typer.Option(DATA, help="prepared data file")) -> None:
    """Prepare the data set named in params (data.source) as tensors for training."""
    p = load_params(params)
    data = prepare(p.data, p.base.seed)
    checkpoint.save(data, out)
    facts = summary(data)
    checkpoint.atomic_write_text(RESULTS / "prepare-data" / "metrics.json", json.dumps(facts, indent=2))
    typer.echo(f"prepared {p.data.source}: {facts}")
