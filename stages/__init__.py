"""Thin Typer commands, one module per DVC stage. `python -m stages` == `kdpipe`.

Each command reads its params section, turns it into explicit arguments for `pipeline/`, and owns
output. The shared plumbing is in `stages/_cli.py`, the project's path conventions in `stages/_layout.py`.
"""

from __future__ import annotations

from stages._cli import app, command, load_all, say  # noqa: F401
from stages._layout import DATA, KNOWLEDGE, MODELS, RESULTS, STATE, knowledge_assets, model_path, targets_path  # noqa: F401
