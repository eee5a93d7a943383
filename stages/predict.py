"""predict: classify PNG/JPEG files or folders with an exported .onnx model (ONNX Runtime only, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.predict import predict as run_predict
from stages import command


@command("predict")
def predict(
    model: Path = typer.Argument(..., help="an .onnx file written by `kdpipe export`"),
    paths: list[Path] = typer.Argument(..., help="image files (PNG/JPEG) or folders of them"),
    top_k: int = typer.Option(3, "--top-k", min=1, help="classes to show per image"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    threads: int = typer.Option(0, help="ONNX Runtime intra-op threads (0 = all cores)"),
    provider: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Top-k classes per image; images are converted to the model's channels and size (from its metadata)."""
    preds, skipped = run_predict(model, paths, top_k, threads, provider)
    for f, why in skipped:
        typer.echo(f"kdpipe predict: skipped {f}: {why}", err=True)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": str(model),
                    "predictions": [{"file": p.file, "top": p.top} for p in preds],
                    "skipped": [{"file": f, "reason": why} for f, why in skipped],
                },
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model.name}: top-{min(top_k, len(preds[0].top))}")
    table.add_column("image", no_wrap=True)
    for i in range(len(preds[0].top)):
        table.add_column(f"#{i + 1}")
    for p in preds:
        table.add_row(_shown(p.file), *(f"{t['class']} {t['prob']:.3f}" for t in p.top))
    Console(width=max(100, IMAGE_CHARS + 4 + 30 * len(preds[0].top))).print(table)


IMAGE_CHARS = 60  # a longer path is cut at its start, so the file name always shows (--json has it whole)


def _shown(file: str) -> str:
    """The path relative to the working directory when it is inside it, cut to its last IMAGE_CHARS."""
    try:
        file = str(Path(file).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    return file if len(file) <= IMAGE_CHARS else "…" + file[-(IMAGE_CHARS - 1) :]
