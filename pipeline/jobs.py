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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline import checkpoint
from pipeline.codedeps import ROOT, code_files
from pipeline.data.augment import augments_data
from pipeline.errors import KdpipeError
from pipeline.job_inputs import (  # noqa: F401 - the job API is used through this module
    check_teacher,
    data_digest,
    data_facts,
    load_data,
    load_teacher,
    make_loader,
    online_teachers,
)
from pipeline.job_spec import (  # noqa: F401
    EVAL_BATCH,
    SELECTED,
    Job,
    JobResult,
    RunPaths,
    Teacher,
    knowledge_job,
    model_job,
)
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.models.init import apply_init, head_parameters
from pipeline.params import BaseParams
from pipeline.runtime import is_main, prepare
from pipeline.sources import CachedLogits, KnowledgeSource, OnlineTeachers
from pipeline.tracking import Tracker
from pipeline.train import Loaders, fit

log = logging.getLogger(__name__)


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
