"""`python -m stages` and the `kdpipe` script: import only the invoked command's module, so a DVC stage
pays for its own imports alone; every command for --help or an unknown name."""
from __future__ import annotations

import importlib
import sys

from stages._cli import HERE, app, load_all


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd and not cmd.startswith(("-", "_")) and (HERE / f"{cmd.replace('-', '_')}.py").is_file():
        importlib.import_module(f"stages.{cmd.replace('-', '_')}")
    if cmd not in {c.name for c in app.registered_commands}:
        load_all()
    app()


if __name__ == "__main__":
    main()
