"""pretrain-factor: IE-KD's teacher factor auto-encoder for one teacher (dvc foreach over factor.teachers)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.job_spec import RunPaths
from pipeline.jobs import run_knowledge
from pipeline.knowledge.factor import FactorParams
from pipeline.params import section
from stages import DATA, RESULTS, STATE, command, knowledge_path, say
from stages._layout import teacher_refs


@command("pretrain-factor")
def pretrain_factor_cmd(
    name: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Train the factor encoder E_T on the frozen teacher's last-stage feature; resumes from
    state/factor/<name>/last.pt."""
    p = load_params(params)
    short = name.rpartition("/")[2]
    paths = RunPaths(knowledge_path("factor", name), STATE / "factor" / short / "last.pt")
    res = run_knowledge(
        "factor_job", name, section(p, "factor", FactorParams), teacher_refs(p, [name]), p.base, DATA, paths
    )
    if res is not None:
        metrics = res.metrics
        checkpoint.atomic_write_text(
            RESULTS / "pretrain-factor" / short / "metrics.json", json.dumps(metrics, indent=2)
        )
        say(
            f"factor {name}: train L_rec {metrics['train/rec']:.4g}, val L_rec "
            f"{metrics.get('val/rec', float('nan')):.4g}"
        )
