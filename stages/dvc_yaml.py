"""dvc-yaml: write dvc.yaml from params.yaml, one stage per job with exactly the deps it reads."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import checkpoint, dvcgen
from pipeline.checks import parse_params, read_yaml
from pipeline.data.sources import raw_paths
from pipeline.evaluate import model_entries
from pipeline.report_dvc import dvc_sections
from stages import command, say
from stages._layout import LAYOUT


def expected(params: Path) -> str:
    """The dvc.yaml text that params file `params` calls for."""
    raw = read_yaml(params)
    p = parse_params(raw, str(params))
    top = dvc_sections(model_entries(p), list(p.export.students))  # curated metrics, overlay plots, artifacts
    return dvcgen.render(dvcgen.build(p, raw, LAYOUT, raw_paths(p.data), top))


@command("dvc-yaml")
def dvc_yaml(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path = typer.Option(Path("dvc.yaml"), help="stage file to write"),
) -> None:
    """Generate dvc.yaml from params.yaml (run it after adding, removing or re-wiring models)."""
    text = expected(params)
    changed = not out.is_file() or out.read_text() != text
    checkpoint.atomic_write_text(out, text)
    say(f"{out}: {'written' if changed else 'already up to date'} ({text.count(chr(10) + '  ')} stage lines)")
