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

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.job_inputs import (
    build_student,
    data_facts,
    knowledge_source,
    load_data,
    make_loader,
    online_teachers,
    restrict_train,
)
from pipeline.job_record import fingerprint, save_outputs, used_hashes
from pipeline.job_spec import EVAL_BATCH, Job, JobResult, RunPaths, knowledge_job
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.params import BaseParams
from pipeline.runtime import CHANNELS_LAST_DEVICES, is_main, prepare
from pipeline.tracking import LiveTracker, Tracker
from pipeline.train import Loaders, fit

log = logging.getLogger(__name__)


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
    data = restrict_train(data, job.train_subset, base.seed)
    facts, cls = data_facts(data), REGISTRY[job.method]
    # the order of these draws from the seeded RNG is part of a run's identity: teachers (their construction
    # draws init values before their weights are loaded), then the student, then the method's own modules
    teachers = online_teachers(job, data)
    source = knowledge_source(job, teachers, data, device)
    make, student, freeze = build_student(job, facts)
    cl = device.type in CHANNELS_LAST_DEVICES and job.optim.channels_last
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
    files = used_hashes(job)
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
    metrics = dict(result.final)
    if is_main():
        metrics = save_outputs(job, method, result.final, data, paths.artifact, device)
    if tracker is not None:
        tracker.close({"resumed_from_epoch": result.resumed_from})
    return JobResult(fit=result, metrics=metrics, artifact=paths.artifact)


def run_knowledge(
    method: str, name: str, block: Any, teachers: list, base: BaseParams, data_dir: Path, paths: RunPaths
) -> JobResult | None:
    """Train a professor/probes/factor job (`method` names its Method) on the prepared data in `data_dir`,
    logging per-epoch metrics with dvclive when `paths.metrics_dir` is set; None on ranks other than 0
    (only rank 0 writes and has measured the result)."""
    job = knowledge_job(method, name, block, teachers)
    res = run_job(job, base, load_data(data_dir), paths, LiveTracker if paths.metrics_dir else None)
    return res if is_main() else None
