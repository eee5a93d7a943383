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
from stages._layout import DATA, KNOWLEDGE, MODELS, RESULTS, STATE, model_path, targets_path


class Layout:
    """The path conventions as strings, for the dvc.yaml generator (pipeline.dvcstage.Paths)."""

    data = str(DATA.parent)
    results_dir = str(RESULTS)

    def model(self, ref: str) -> str:
        return str(model_path(ref))

    def state(self, section: str, name: str) -> str:
        return str(STATE / section / name) if name else str(STATE / section)

    def results(self, stage: str, name: str = "") -> str:
        return str(RESULTS / stage / name) if name else str(RESULTS / stage)

    def knowledge(self, kind: str, teacher: str = "") -> str:
        short = teacher.rpartition("/")[2]
        return {
            "targets": str(targets_path(teacher)),
            "professor": str(KNOWLEDGE / "professor" / f"{short}.pt"),
            "professor_targets": str(KNOWLEDGE / "professor" / f"{short}.targets.pt"),
            "probes": str(KNOWLEDGE / "probes.pt"),
            "factor": str(KNOWLEDGE / "factor" / f"{short}.pt"),
        }[kind]

    def export(self, name: str, int8: bool = False) -> str:
        return str(MODELS / "export" / f"{name}{'.int8' if int8 else ''}.onnx")


def expected(params: Path) -> str:
    """The dvc.yaml text that params file `params` calls for."""
    raw = read_yaml(params)
    p = parse_params(raw, str(params))
    top = dvc_sections(model_entries(p), list(p.export.students))  # curated metrics, overlay plots, artifacts
    return dvcgen.render(dvcgen.build(p, raw, Layout(), raw_paths(p.data), top))


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
