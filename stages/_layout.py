"""Path conventions of the DVC project: stages decide paths; pipeline/ never does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

DATA = Path("data/prepared/data.pt")
MODELS, STATE, RESULTS = Path("models"), Path("state"), Path("results")
KNOWLEDGE = MODELS / "knowledge"  # cached targets, professors, probes, factor encoders
# each kind of knowledge file under KNOWLEDGE; {} = the teacher (targets: its full reference, else its name)
KNOWLEDGE_FILES = {
    "targets": "targets/{}.pt", "probes": "probes.pt", "factor": "factor/{}.pt",
    "professor": "professor/{}.pt", "professor_targets": "professor/{}.targets.pt",
}  # fmt: skip
KIND = {"teachers": "teacher", "patriarchs": "patriarch", "students": "student", "generations": "generation"}


def model_path(name: str) -> Path:
    """`<section>/<n>` names a model of that params section; a bare name is a teacher."""
    section, _, n = name.rpartition("/")
    return MODELS / (section or "teachers") / f"{n}.pt"


def knowledge_path(kind: str, teacher: str = "") -> Path:
    """Where the knowledge stages write `kind` (a KNOWLEDGE_FILES key) for `teacher`."""
    name = teacher if kind == "targets" else teacher.rpartition("/")[2]
    return KNOWLEDGE / KNOWLEDGE_FILES[kind].format(name)


def targets_path(name: str) -> Path:
    return knowledge_path("targets", name)


def teacher_refs(params, names: list[str]) -> list[tuple[str, Path, str]]:
    """(name, artifact path, arch params say it has) per teacher: the fields of pipeline.job_spec.Teacher."""
    return [(n, model_path(n), params.teacher(n).arch) for n in names]


def knowledge_assets(spec) -> dict:
    """Paths of stage-made knowledge a method may need (professor, probes, factor encoder), by teacher."""
    return {
        "professor": [knowledge_path("professor", t) for t in spec.teachers],
        "probes": knowledge_path("probes"),
        "factor": knowledge_path("factor", spec.teachers[0] if spec.teachers else ""),
        "teacher_names": list(spec.teachers),
    }


# the conventions as strings, for the dvc.yaml generator (pipeline.dvcstage.Paths); a name "" adds nothing
LAYOUT = SimpleNamespace(
    data=str(DATA.parent),
    results_dir=str(RESULTS),
    model=lambda ref: str(model_path(ref)),
    state=lambda section, name: str(STATE / section / name),
    results=lambda stage, name="": str(RESULTS / stage / name),
    knowledge=lambda kind, teacher="": str(knowledge_path(kind, teacher)),
    export=lambda name, int8=False: str(MODELS / "export" / f"{name}{'.int8' if int8 else ''}.onnx"),
)
