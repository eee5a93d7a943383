"""repro-parallel: `dvc repro` with several stages at once (independent jobs of one thread each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import typer
import yaml

from pipeline.errors import KdpipeError
from pipeline.stage_dag import downstream, run_stages
from stages import command, say

LOGS = Path(".dvc/tmp/repro-parallel")  # one log per stage; DVC ignores its tmp folder


def _dvc(*args: str) -> str:
    beside = Path(sys.executable).with_name("dvc")  # the environment's dvc, activated or not
    dvc = str(beside) if beside.is_file() else shutil.which("dvc")
    if dvc is None:
        raise KdpipeError("dvc not found on PATH; activate the environment (. .venv/bin/activate)")
    res = subprocess.run([dvc, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise KdpipeError(f"dvc {args[0]} failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return res.stdout


@command("repro-parallel")
def repro_parallel(
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="stage commands at once (one per core)"),
    dvc_yaml: Path = typer.Option(Path("dvc.yaml"), help="stage file"),
) -> None:
    """Run the stages `dvc status` reports as changed, JOBS at a time in dependency order, then record them
    with `dvc commit` so `dvc repro` finds the pipeline up to date. Set base.threads so JOBS x threads fits
    the cores. A failure stops it; re-running resumes finished stages from their state in seconds."""
    if not dvc_yaml.is_file():
        raise KdpipeError(f"{dvc_yaml} not found; run `kdpipe dvc-yaml` first")
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    changed = downstream(stages, set(json.loads(_dvc("status", "--json") or "{}")))
    todo = {n: s for n, s in stages.items() if n in changed}
    if not todo:
        say("pipeline up to date")
        return
    say(f"{len(todo)} stage(s) to run, {jobs} at a time; logs in {LOGS}/")
    ran = run_stages(todo, jobs, Path.cwd(), LOGS)
    _dvc("commit", "--force")  # every stage at once: DVC reads the pipeline once, not once per target
    say(f"ran and recorded {len(ran)} stage(s); `dvc status` is clean")
