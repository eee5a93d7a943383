"""check-params: validate the whole params file (every problem, one line each) and dvc.yaml's freshness."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import collect_problems, read_yaml
from pipeline.data.build import size_problems
from pipeline.dvcstage import CHECKED
from pipeline.params import model_entries
from stages import command, say


@command("check-params")
def check_params(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    dvc_yaml: Path = typer.Option(Path("dvc.yaml"), help="stage file that must match the params"),
) -> None:
    """List every problem in the params file; fail (exit 2) if there is one or if dvc.yaml is out of date."""
    p, problems = collect_problems(read_yaml(params), str(params))
    if p is not None:  # subset sizes against the data on disk, before prepare-data replaces anything
        own = {f"{sec}.{n}.train_subset": s.train_subset for sec, n, s in model_entries(p) if s.train_subset}
        problems += [f"{params}: {m}" for m in size_problems(p.data, own)]
    if not problems and dvc_yaml.is_file():
        from stages.dvc_yaml import expected

        if dvc_yaml.read_text() != expected(params):
            problems.append(
                f"{dvc_yaml} does not match {params} (models or their teachers changed); "
                "run `kdpipe dvc-yaml`, then `dvc repro`"
            )
    if problems:
        for line in problems:
            typer.echo(f"kdpipe check-params: error: {line}", err=True)
        raise typer.Exit(2)
    # constant: downstream stages never re-run for it
    checkpoint.atomic_write_text(Path(CHECKED), "params valid\n")
    say(f"{params}: valid")
