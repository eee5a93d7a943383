"""init-data: scan a folder of class folders, report what is there, and write a profile that trains on it."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from pipeline import checkpoint
from pipeline.checks import parse_params
from pipeline.data.scan import profile_text, scan_folder
from stages import command


@command("init-data")
def init_data(
    folder: Path = typer.Argument(
        ..., help="root/<class>/<image>, or root/train/<class>/ + root/test/<class>/"
    ),
    out: Path = typer.Option(Path("profiles/own_data.yaml"), help="profile to write"),
    image_size: int = typer.Option(0, help="square side in pixels (0 = the suggested size)"),
    test_fraction: float = typer.Option(0.2, help="one-folder layout: share of each class held out as test"),
) -> None:
    """List classes, counts and image sizes of FOLDER and write a minimal profile (data, teacher, student,
    export)."""
    scan = scan_folder(folder, test_fraction)
    for line in scan.lines():
        typer.echo(line)
    text = profile_text(scan, image_size)
    parse_params(yaml.safe_load(text), str(out))  # the profile must load as it is
    checkpoint.atomic_write_text(out, text)
    typer.echo(f"wrote {out}; train on it with: cp {out} params.yaml && kdpipe dvc-yaml && dvc repro")
