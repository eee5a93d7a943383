"""`kdpipe --version` and shell completion: the root options a user meets before any stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import pipeline
from stages import app

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"kdpipe {pipeline.__version__}"


def test_version_entry_point_imports_no_stage():
    # the real entry point: --version must not pay for torch or any stage module
    code = (
        "import sys; sys.argv = ['kdpipe', '--version']\n"
        "from stages.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('loaded', sorted(m for m in sys.modules if m.startswith('stages.') and m[7:8] != '_'),"
        " 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"kdpipe {pipeline.__version__}", "loaded [] False"]


def test_shell_completion_is_offered():
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="kdpipe")
    assert script.exit_code == 0 and "_KDPIPE_COMPLETE" in script.output
