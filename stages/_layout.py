"""Path conventions of the DVC project: stages decide paths; pipeline/ never does."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import KdpipeError

DATA = Path("data/prepared/data.pt")
MODELS, STATE, RESULTS = Path("models"), Path("state"), Path("results")
# cached targets, professors, probes, factor encoders (students depend on it)
KNOWLEDGE = MODELS / "knowledge"
KIND = {"teachers": "teacher", "patriarchs": "patriarch", "students": "student", "generations": "generation"}


def model_path(name: str) -> Path:
    """`<section>/<n>` names a model of that params section; a bare name is a teacher."""
    section, _, n = name.rpartition("/")
    return MODELS / (section or "teachers") / f"{n}.pt"


def targets_path(name: str) -> Path:
    return KNOWLEDGE / "targets" / f"{name}.pt"


def model_spec(params, name: str, what: str = "model"):
    """The params entry of `name` (`<section>/<n>` or a bare teacher name); a one-line error if there is
    none."""
    section, _, key = name.rpartition("/")
    models = getattr(params, section or "teachers", None) if (section or "teachers") in KIND else None
    if not isinstance(models, dict) or key not in models:
        raise KdpipeError(
            f"no {what} {name!r} in params; name a key of teachers, or <section>/<name> "
            f"(known teachers: {', '.join(params.teachers) or 'none'})"
        )
    return models[key]


def teacher_refs(params, names: list[str]) -> list[tuple[str, Path, str]]:
    """(name, artifact path, arch params say it has) per teacher: the fields of pipeline.job_spec.Teacher."""
    return [(n, model_path(n), model_spec(params, n, "teacher").arch) for n in names]


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
