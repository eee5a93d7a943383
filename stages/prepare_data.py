"""prepare-data: read the configured source, hold out validation, write memory-mappable uint8 files +
metadata."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.data.build import prepare_to
from stages import DATA, RESULTS, command


@command("prepare-data")
def prepare_data(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path = typer.Option(DATA.parent if DATA.suffix else DATA, help="prepared data directory"),
) -> None:
    """Prepare the data set named in params (data.source) as uint8 files in OUT ({train,val,test}.u8,
    meta.json)."""
    p = load_params(params)
    facts = prepare_to(p.data, p.base.seed, out)
    checkpoint.atomic_write_text(RESULTS / "prepare-data" / "metrics.json", json.dumps(facts, indent=2))
    typer.echo(f"prepared {p.data.source}: {facts}")
