"""What a training job is: `Job` (resolved from a params entry by `model_job` / `knowledge_job`), the
teachers it reads, where it writes (`RunPaths`) and what it returns (`JobResult`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.config import to_dict
from pipeline.errors import KdpipeError
from pipeline.methods import REGISTRY, student_methods
from pipeline.params import ModelParams, OptimParams
from pipeline.train import FitResult

EVAL_BATCH = 512  # images per batch of the plain (validation, inference) loaders
SELECTED = Path("models/selected.json")  # select-student's choice, for `arch: selected`


class Teacher(NamedTuple):
    """A teacher artifact a job reads, and what params say it is (None = not checked)."""

    name: str  # as in params: a teacher name or <section>/<name>
    path: Path
    arch: str | None = None


@dataclass
class RunPaths:
    """Where one job writes (chosen by the stage)."""

    artifact: Path  # the artifact (.pt); extra files go next to it (<stem><suffix>.pt)
    state: Path | None = None  # resumable state (last.pt) in a persist: true output
    metrics_dir: Path | None = None  # dvclive directory: metrics.json + plots (None = no per-epoch tracking)


@dataclass
class Job:
    """Everything that defines one training run, resolved from params by `model_job` / `knowledge_job`."""

    kind: str  # artifact kind: teacher | student | patriarch | generation | professor | probes | factor
    name: str
    method: str  # registry name
    args: Any  # the method's Params
    optim: OptimParams
    params: dict  # the resolved params stored in the artifact and hashed into the fingerprint
    seed: int = 0  # added to base.seed
    augment: bool = True
    train_subset: int = 0  # model jobs: train on this many class-balanced training images (0 = all)
    teachers: list[Teacher] = field(default_factory=list)
    arch: str | None = None  # model jobs: the student's architecture
    arch_kwargs: dict = field(default_factory=dict)
    init: Any = None  # model jobs: pipeline.models.init.InitParams (start from a weights file) or None
    targets: list[Path] | None = None  # cached teacher logits (targets: cached), one file per teacher
    cached_with_augment: bool = False
    assets: dict = field(default_factory=dict)  # stage-made knowledge for the method (see Method.uses_assets)


@dataclass
class JobResult:
    fit: FitResult
    metrics: dict  # knowledge jobs: the method's summary; model jobs: fit's final metrics
    artifact: Path


def model_job(
    name: str,
    kind: str,
    spec: ModelParams,
    teachers: Iterable = (),
    targets: list[Path] | None = None,
    assets: dict | None = None,
    selected: Path = SELECTED,
) -> Job:
    """A teacher/student/patriarch/generation job from its params entry (`arch: selected` reads
    `selected`)."""
    if spec.method not in REGISTRY or REGISTRY[spec.method].job:
        raise KdpipeError(
            f"{name}: method {spec.method!r} is not a student method; use one of "
            f"{', '.join(student_methods())}"
        )
    arch, kwargs, params = spec.arch, dict(spec.arch_kwargs), to_dict(spec)
    if arch == "selected":
        from pipeline.select_space import resolve_selected

        arch, kwargs, size = resolve_selected(selected)
        params |= {"arch": arch, "arch_kwargs": kwargs, "input_size": size, "selected_from": str(selected)}
    return Job(
        kind=kind,
        name=name,
        method=spec.method,
        args=spec.args,
        optim=spec.optim,
        params=params,
        seed=spec.seed,
        augment=spec.augment,
        train_subset=spec.train_subset,
        teachers=[Teacher(*t) for t in teachers] if spec.targets == "online" else [],
        arch=arch,
        arch_kwargs=kwargs,
        init=spec.init,
        targets=targets if spec.targets == "cached" else None,
        cached_with_augment=spec.cached_with_augment,
        assets=dict(assets or {}),
    )


def knowledge_job(method: str, name: str, p: Any, teachers: Iterable) -> Job:
    """A professor/probes/factor job; `p` is the section's params (the method's Params); `teachers` are read
    online."""
    cls = REGISTRY[method]
    own = {
        k: v for k, v in to_dict(p).items() if k != "teachers"
    }  # adding a teacher to the list must not retrain the others
    return Job(
        kind=cls.kind,
        name=name,
        method=method,
        args=p,
        optim=OptimParams(**p.optim_args()),
        params=own,
        seed=getattr(p, "seed", 0),
        augment=p.augment,
        teachers=[Teacher(*t) for t in teachers],
    )
