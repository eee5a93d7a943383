"""Thin Typer commands, one module per DVC stage. `python -m stages` == `kdpipe`.

Each command reads its params section, turns it into explicit arguments for `pipeline/`, and owns
output. The shared plumbing is in `stages/_cli.py`, the project's path conventions in `stages/_layout.py`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from stages._cli import app, command, say  # noqa: F401
from stages._layout import (  # noqa: F401
    DATA,
    MODELS,
    RESULTS,
    STATE,
    knowledge_assets,
    knowledge_path,
    model_path,
    targets_path,
)

HERE = Path(__file__).parent  # one module per command


def load_all() -> None:
    """Import every stage module so its command registers (`python -m stages` imports only the one run)."""
    for mod in pkgutil.iter_modules([str(HERE)]):
        if not mod.name.startswith("_"):
            importlib.import_module(f"stages.{mod.name}")
