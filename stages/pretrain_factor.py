"""pretrain-factor: IE-KD's teacher factor auto-encoder for one teacher (dvc foreach over factor.teachers)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.factor import FactorParams, pretrain_factor
from pipeline.params import section
from pipeline.checks import load_params
from pipeline.runner import load_data
from pipeline.runtime import is_main
from stages import DATA, KNOWLEDGE, RESULTS, STATE, command, model_path


@command("pretrain-factor")
def pretrain_factor_cmd(name: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
                        params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Train the factor encoder E_T on the frozen teacher's last-stage feature; resumes from state/factor/<name>/last.pt."""
    p = load_params(params)
    fp = section(p, "factor", FactorParams)
    sec, _, short = name.rpartition("/")
    models = getattr(p, sec or "teachers", None)
    if not isinstance(models, dict) or short not in models:
        raise KdpipeError(f"no teacher {name!r} in {params}; name a key of teachers (or <section>/<name>) in factor.teachers")
    if fp.channels < 1 or fp.epochs < 1:
        raise KdpipeError(f"factor.channels and factor.epochs must be >= 1, got {fp.channels} and {fp.epochs}; fix the factor section")
    metrics = pretrain_factor(name, model_path(name), load_data(DATA), fp, p.base,
                              out=KNOWLEDGE / "factor" / f"{short}.pt", state=STATE / "factor" / short / "last.pt")
    if is_main():
        checkpoint.atomic_write_text(RESULTS / "pretrain-factor" / short / "metrics.json", json.dumps(metrics, indent=2))
    typer.echo(f"factor {name}: train L_rec {metrics['train/rec']:.4g}, val L_rec {metrics.get('val/rec', float('nan')):.4g}")
