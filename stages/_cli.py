"""CLI plumbing shared by every stage command: the Typer app, logging set-up, the one-line error on a
user mistake (exit code 2), rank-0 output and the lazy import of only the invoked command's module."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import typer

from pipeline.allocator import steady_allocator
from pipeline.errors import KdpipeError

HERE = Path(__file__).parent  # the stages package: one module per command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdpipe: distil a small, fast image classifier from one or more teachers and ship it as ONNX.")

@app.callback()
def _root() -> None:
    """kdpipe: distil a small, fast image classifier from one or more teachers and ship it as ONNX."""
    # a callback keeps Typer in group mode even when only the invoked command's module is imported


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if int(os.environ.get("RANK", 0)) > 0:
        level = logging.WARNING  # under torchrun only rank 0 reports progress
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("dvclive", "dvc", "matplotlib", "PIL", "onnxscript", "onnx_ir", "onnxruntime", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def command(name: str) -> Callable:
    """Register a stage command: logging set up, KdpipeError -> one line on stderr + exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            setup_logging(os.environ.get("KDPIPE_VERBOSE") == "1")
            steady_allocator()  # stage processes reuse activation memory instead of page-faulting it in per batch
            try:
                return fn(*args, **kwargs)
            except KdpipeError as e:
                typer.echo(f"kdpipe {name}: error: {e}", err=True)
                raise typer.Exit(2) from None

        return app.command(name)(wrapper)

    return deco


def say(message: str) -> None:
    """Print a result line for the user (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", 0)) == 0:
        typer.echo(message)


def load_all() -> None:
    """Import every stage module so its command registers."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules([str(HERE)]):
        if not mod.name.startswith("_"):
            importlib.import_module(f"stages.{mod.name}")


def main() -> None:
    """Import only the invoked command's module (stage start-up is paid once per DVC stage); all for --help."""
    import importlib

    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    module = cmd.replace("-", "_")
    if cmd and not cmd.startswith("-") and (HERE / f"{module}.py").is_file():
        importlib.import_module(f"stages.{module}")
        if cmd in {c.name for c in app.registered_commands}:
            return app()
    load_all()
    app()
