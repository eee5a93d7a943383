"""CLI plumbing shared by every stage command: the Typer app (with `--version` and shell completion),
the one-line error on a user mistake (exit code 2), rank-0 output."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import typer

from pipeline import __version__, logs
from pipeline.allocator import steady_allocator
from pipeline.errors import KdpipeError, os_error_line

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kdpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the kdpipe version and exit."
    ),
) -> None:
    """kdpipe: distil a small, fast image classifier from one or more teachers and ship it as ONNX."""
    # a callback keeps Typer in group mode even when only the invoked command's module is imported


def command(name: str) -> Callable:
    """Register a stage command: logging and allocator set up, KdpipeError -> one line on stderr + exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            logs.configure(os.environ.get("KDPIPE_VERBOSE") == "1")
            steady_allocator()  # stage processes reuse activation memory, not page-faulting it in per batch
            try:
                return fn(*args, **kwargs)
            except KdpipeError as e:
                typer.echo(f"kdpipe {name}: error: {e}", err=True)
                raise typer.Exit(2) from None
            except OSError as e:  # a write outside the atomic layer (a library's files): still one line
                typer.echo(f"kdpipe {name}: error: {os_error_line(e)}", err=True)
                raise typer.Exit(2) from None

        return app.command(name)(wrapper)

    return deco


def say(message: str) -> None:
    """Print a result line for the user (rank 0 only under torchrun)."""
    if logs.launch_rank() == 0:
        typer.echo(message)
