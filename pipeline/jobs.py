"""The one job runner: every training stage (teachers, students, generations, professor, probes, factor)
runs here.

    job = model_job(name, kind, spec, teachers=..., targets=..., assets=...)
    # or knowledge_job(method, name, params, teachers)
    res = run_job(job, base, data, RunPaths(artifact, state, metrics_dir), LiveTracker)

`run_job` does, for any job: runtime set-up (`pipeline.runtime.prepare`: device, threads, DDP, seed) ->
the student (model jobs) -> the knowledge source (frozen teachers, checked against params and data, or
cached logits) -> loaders for the splits the method needs (`make_loader`) -> the method -> `fingerprint`
-> `fit` -> ONE artifact of the job's kind (pipeline.checkpoint), plus the method's extra files (the
professor's cached refined targets). Stages only turn params and paths into a Job; nothing here reads
params.yaml or decides a path on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pipeline import checkpoint
from pipeline.codedeps import ROOT, code_files
from pipeline.config import to_dict
from pipeline.data.augment import augments_data
from pipeline.data.cache import load_prepared
from pipeline.data.loaders import make_loader as data_loader
from pipeline.errors import KdpipeError
from pipeline.methods import REGISTRY, Context, build_method, student_methods
from pipeline.models import create_model
from pipeline.models.init import apply_init, head_parameters
from pipeline.params import BaseParams, ModelParams, OptimParams
from pipeline.runtime import is_main, prepare
from pipeline.sources import CachedLogits, KnowledgeSource, OnlineTeachers, teacher_norm
from pipeline.tracking import Tracker
from pipeline.train import FitResult, Loaders, fit

log = logging.getLogger(__name__)
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


def load_data(path: str | Path) -> dict:
    """The prepared data set (images memory-mapped); a missing or foreign folder is a one-line error."""
    return load_prepared(path)


def data_facts(data: dict) -> dict:
    return {
        "num_classes": len(data["class_names"]),
        "in_channels": int(data["train_x"].shape[1]),
        "input_size": int(data["train_x"].shape[-1]),
    }


def data_digest(data: dict) -> str:
    """sha256 of what training reads from the prepared data: train/val images and labels, classes,
    normalisation."""
    h = hashlib.sha256(
        json.dumps(
            [data["class_names"], data["mean"], data["std"], data.get("pad"), data.get("flip")]
        ).encode()
    )
    for key in ("train_x", "train_y", "val_x", "val_y"):
        t = data[key].contiguous()
        h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def make_loader(
    data: dict,
    split: str,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    train: bool = False,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    channels_last: bool = False,
    augment: bool = False,
):
    """The one way jobs build a loader: `train` shuffles by (seed, epoch), shards over DDP ranks and augments
    (if `augment`, as the prepared data asks); otherwise data-set order, whole split, no augmentation. A split
    larger than the data's `resident_max_mb` streams from the memory-mapped cache
    (`pipeline.data.loaders`)."""
    return data_loader(
        data,
        split,
        batch_size=batch_size,
        device=device,
        train=train,
        seed=seed,
        rank=rank,
        world=world,
        channels_last=channels_last,
        augment=augment,
    )


def check_teacher(art: dict, data: dict, name: str) -> None:
    facts = data_facts(data)
    if art["num_classes"] != facts["num_classes"] or art["in_channels"] != facts["in_channels"]:
        raise KdpipeError(
            f"teacher {name!r} has {art['num_classes']} classes/{art['in_channels']} channels but the data "
            "has "
            f"{facts['num_classes']}/{facts['in_channels']}; retrain it on this data (dvc repro)"
        )


def load_teacher(t: Teacher, data: dict) -> tuple[torch.nn.Module, dict]:
    """A frozen teacher and its metadata, checked against params (arch) and the data (classes, channels)."""
    model, meta = checkpoint.load_model(t.path, expect={"arch": t.arch})
    check_teacher(meta, data, t.name)
    return model, meta


def online_teachers(job: Job, data: dict) -> OnlineTeachers | None:
    """The job's teachers, each fed the student's batch resized/renormalised to its own input size and
    mean/std."""
    if not job.teachers:
        return None
    loaded = [load_teacher(t, data) for t in job.teachers]
    return OnlineTeachers(
        [m for m, _ in loaded],
        data_norm=(data["mean"], data["std"]),
        teacher_norms=[teacher_norm(meta) for _, meta in loaded],
    )


def _source(
    job: Job, teachers: OnlineTeachers | None, data: dict, device: torch.device
) -> KnowledgeSource | None:
    """Online teachers, or cached logits (K, N, C): infer-targets' files, or one pass when the method asks for
    it."""
    cls = REGISTRY[job.method]
    if job.targets is not None:
        if job.augment and augments_data(data) and not job.cached_with_augment:
            raise KdpipeError(
                "cached targets were computed on un-augmented images; set augment: false, "
                "or cached_with_augment: true to accept it"
            )
        if cls.needs_features:
            raise KdpipeError(
                f"method {job.method!r} needs teacher features, which are not cached; set targets: online"
            )
        tables = [checkpoint.load(p, "cached targets")["train"] for p in job.targets]
        if not tables or any(t.shape[0] != len(data["train_y"]) for t in tables):
            raise KdpipeError(
                "cached targets do not match the training split; re-run infer-targets (dvc repro)"
            )
        return CachedLogits(torch.stack(tables))
    if teachers is not None and cls.precompute_targets and not job.augment:
        # without augmentation every epoch sees the same images: run the teachers once, look their logits up
        # by idx
        plain = make_loader(data, "train", batch_size=EVAL_BATCH, device=device)
        teachers.to(device)
        return CachedLogits(torch.cat([teachers.logits(batch).cpu() for batch in plain], dim=1))
    return teachers


def _flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in metrics.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def fingerprint(job: Job, base: BaseParams, data: dict, files: list[str]) -> str:
    """A short hash of exactly what changes the result: the job's resolved params and seed, the data, the
    sha256 of the files it reads (teachers, cached targets, used knowledge) and of the code it runs
    (`code_files`)."""
    code = hashlib.sha256()
    for f in code_files(job.method, job.args):
        code.update(f.encode() + b"\0" + (ROOT / f).read_bytes())
    parts = [job.kind, job.params, base.seed, job.seed, data_digest(data), files, code.hexdigest()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _used_files(job: Job) -> list[Path]:
    assets = [job.assets.get(k) for k in REGISTRY[job.method].uses_assets]
    flat = [a for v in assets for a in (v if isinstance(v, list) else [v])]
    init = [Path(job.init.path)] if job.init is not None else []
    return (
        [t.path for t in job.teachers]
        + init
        + list(job.targets or [])
        + [Path(a) for a in flat if isinstance(a, (str, Path)) and Path(a).is_file()]
    )


def run_job(
    job: Job,
    base: BaseParams,
    data: dict,
    paths: RunPaths,
    tracker_factory: Callable[[Path], Tracker] | None = None,
) -> JobResult:
    """Train `job` with `fit` and write its artifact (main rank); resumes from `paths.state` when the
    fingerprint matches."""
    seed = base.seed + job.seed
    device, rank, world = prepare(base.device, base.threads, seed)
    facts, cls = data_facts(data), REGISTRY[job.method]
    if job.params.get("selected_from") and job.params.get("input_size") != facts["input_size"]:
        raise KdpipeError(
            f"{job.name}: select-student chose input size {job.params['input_size']} but the data is "
            f"{facts['input_size']} px; list candidates at data.image_size in select.candidates"
        )

    def make_student() -> torch.nn.Module:  # a fresh student (DML peers ask for more)
        return create_model(job.arch, facts["num_classes"], facts["in_channels"], **job.arch_kwargs)

    make = make_student if job.arch is not None else None
    # the order of these draws from the seeded RNG is part of a run's identity: teachers (their construction
    # draws init values before their weights are loaded), then the student, then the method's own modules
    teachers = online_teachers(job, data)
    source = _source(job, teachers, data, device)
    student = make() if make else None
    freeze: list[str] = []
    if job.init is not None and student is not None:
        report = apply_init(student, job.init, job.arch)
        log.info(
            "%s %s: weights from %s (%d tensors loaded%s)",
            job.kind,
            job.name,
            job.init.path,
            report["loaded"],
            f"; head {', '.join(report['replaced_head'])} is new" if report["replaced_head"] else "",
        )
        heads = set(head_parameters(student))
        freeze = (
            [n for n, _ in student.named_parameters() if n not in heads] if job.init.freeze_epochs else []
        )
    cl = device.type == "cuda" and job.optim.channels_last
    train = make_loader(
        data,
        "train",
        batch_size=job.optim.batch_size,
        device=device,
        train=True,
        seed=seed,
        rank=rank,
        world=world,
        channels_last=cl,
        augment=job.augment,
    )
    val = (
        make_loader(data, "val", batch_size=EVAL_BATCH, device=device, channels_last=cl)
        if "val" in cls.splits
        else None
    )
    files = [checkpoint.sha256(p) for p in _used_files(job)]
    assets = {
        "teacher_names": [t.name for t in job.teachers],
        **job.assets,
        "teacher_sha256": files[: len(job.teachers)],
    }
    ctx = Context(
        student=student,
        source=source,
        epochs=job.optim.epochs,
        make_student=make,
        assets=assets,
        teachers=teachers,
        train_size=len(data["train_y"]),
        val_size=len(data["val_y"]),
        **facts,
    )
    method = build_method(job.method, ctx, job.args)
    if freeze:  # init.freeze_epochs: only the new head trains at first (fit drops the other gradients)
        method.frozen = (
            [q for n, q in student.named_parameters() if n in set(freeze)],
            job.init.freeze_epochs,
        )
    tracker = (
        tracker_factory(paths.metrics_dir) if tracker_factory and paths.metrics_dir and is_main() else None
    )
    if tracker is not None and hasattr(tracker, "log_params"):
        tracker.log_params(job.params)  # the resolved params block beside the metrics (dvclive params.yaml)
    result = fit(
        method,
        Loaders(train, val if val is not None and len(data["val_y"]) else None),
        job.optim,
        tracker,
        device,
        paths.state,
        fingerprint(job, base, data, files),
        desc=f"{job.kind} {job.name}",
    )
    metrics = (
        _save(job, method, result.final, data, paths.artifact, device) if is_main() else dict(result.final)
    )
    if tracker is not None:
        tracker.close({"resumed_from_epoch": result.resumed_from})
    return JobResult(fit=result, metrics=metrics, artifact=paths.artifact)


def _save(job: Job, method: Any, final: dict, data: dict, artifact: Path, device: torch.device) -> dict:
    """Write the job's ONE artifact (and a knowledge job's extra files next to it); returns the job's
    metrics."""

    def beside(suffix: str) -> Path:
        return artifact.with_name(f"{artifact.stem}{suffix}.pt") if suffix else artifact

    if not REGISTRY[job.method].job:
        for suffix, net in method.exported().items():  # DML peers: <name>_peer1.pt next to <name>.pt
            checkpoint.save(
                checkpoint.make_artifact(
                    net,
                    kind=job.kind,
                    name=job.name + suffix,
                    arch=job.arch,
                    arch_kwargs=job.arch_kwargs,
                    mean=data["mean"],
                    std=data["std"],
                    class_names=data["class_names"],
                    params=job.params,
                    metrics=final,
                    **data_facts(data),
                ),
                beside(suffix),
            )
        return dict(final)
    out = method.outputs(lambda s: make_loader(data, s, batch_size=EVAL_BATCH, device=device), final)
    checkpoint.save(
        checkpoint.make_artifact(
            kind=job.kind,
            name=job.name,
            params=job.params,
            metrics=_flat(out.metrics),
            class_names=list(data["class_names"]),
            **out.fields,
        ),
        artifact,
    )
    for suffix, obj in out.extras.items():  # tied to the artifact by its hash
        checkpoint.save(obj | {f"{job.kind}_sha256": checkpoint.sha256(artifact)}, beside(suffix))
    return out.metrics
