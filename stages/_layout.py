"""Path conventions of the DVC project: stages decide paths; pipeline/ never does."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared/data.pt")
MODELS, STATE, RESULTS = Path("models"), Path("state"), Path("results")


KNOWLEDGE = MODELS / "knowledge"  # cached targets, professors, probes, factor encoders (students depend on it)


def model_path(name: str) -> Path:
    """`<section>/<n>` names a model of that params section; a bare name is a teacher."""
    section, _, n = name.rpartition("/")
    return MODELS / (section or "teachers") / f"{n}.pt"


def targets_path(name: str) -> Path:
    return KNOWLEDGE / "targets" / f"{name}.pt"


def knowledge_assets(spec) -> dict:
    """Paths of stage-made knowledge a method may need (professor, probes, factor encoder), by teacher."""
    first = spec.teachers[0].rpartition("/")[2] if spec.teachers else ""
    return {"professor": [KNOWLEDGE / "professor" / f"{t.rpartition('/')[2]}.pt" for t in spec.teachers], "probes": KNOWLEDGE / "probes.pt",
            "factor": KNOWLEDGE / "factor" / f"{first}.pt", "teacher_names": list(spec.teachers)}
