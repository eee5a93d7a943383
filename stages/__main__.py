"""`python -m stages` and the `kdpipe` script: import only the invoked command's module, so a DVC stage
pays for its own imports alone; no command module for --version; every command for --help, shell
completion or an unknown name."""

from __future__ import annotations

import importlib
import sys

from stages import HERE, app, load_all

NO_COMMANDS = {"--version"}  # root options that never reach a command


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd and not cmd.startswith(("-", "_")) and (HERE / f"{cmd.replace('-', '_')}.py").is_file():
        importlib.import_module(f"stages.{cmd.replace('-', '_')}")
    if cmd not in {c.name for c in app.registered_commands} and cmd not in NO_COMMANDS:
        load_all()
    app(prog_name="kdpipe")


if __name__ == "__main__":
    main()
