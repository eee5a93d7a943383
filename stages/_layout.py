"""Path conventions of the DVC project: stages decide paths; pipeline/ never does."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared/data.pt")
MODELS, STATE, RESULTS = Path("models"), Path("state"), Path("results")


KNOWLEDGE = (
    MODELS / "knowledge"
)  # cached targets, professors, probes, factor encoders (students depend on it)


def model_path(name: str) -> Path:
    """`<section>/<n>` names a model of that params section; a bare name is a teacher."""
    section, _, n = name.rpartition("/")
    return MODELS / (section or "teachers") / f"{n}.pt"


def targets_path(name: str) -> Path:
    return KNOWLEDGE / "targets" / f"{name}.pt"


def knowledge_assets(spec) -> dict:
    """Paths of stage-made knowledge a method may need (professor, probes, factor encoder), by teacher."""
    first = spec.teachers[0].rpartition("/")[2] if spec.teachers else ""
    return {
        "professor": [KNOWLEDGE / "professor" / f"{t.rpartition('/')[2]}.pt" for t in spec.teachers],
        "probes": KNOWLEDGE / "probes.pt",
        "factor": KNOWLEDGE / "factor" / f"{first}.pt",
        "teacher_names": list(spec.teachers),
    }


class Layout:
    """The path conventions as strings, for the dvc.yaml generator (pipeline.dvcgen.Paths)."""

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
