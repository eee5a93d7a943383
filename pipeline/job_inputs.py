"""A job's inputs: the prepared data, its one loader, the teachers checked against params and data, the
knowledge source built from them (or from cached logits), and the student with its starting weights."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline import checkpoint
from pipeline.data.augment import augments_data
from pipeline.data.cache import load_prepared
from pipeline.data.loaders import make_loader as data_loader
from pipeline.data.split import balanced_subset, check_size
from pipeline.errors import KdpipeError
from pipeline.job_spec import EVAL_BATCH, Job, Teacher
from pipeline.methods import REGISTRY
from pipeline.models import create_model
from pipeline.models.init import apply_init, head_parameters
from pipeline.sources import CachedFeatures, CachedLogits, KnowledgeSource, OnlineTeachers, teacher_norm

log = logging.getLogger(__name__)


def load_data(path: str | Path) -> dict:
    """The prepared data set (images memory-mapped); a missing or foreign folder is a one-line error."""
    return load_prepared(path)


def restrict_train(data: dict, n: int, seed: int) -> dict:
    """`data` with its training split cut to `n` class-balanced images (0 = unchanged), chosen by `seed` alone
    so every model with the same `n` trains on the same images; `train_rows` keeps their positions in the
    full split (cached teacher logits are looked up by it)."""
    if not n:
        return data
    check_size("model.train_subset", n, len(data["train_y"]))
    rows = balanced_subset(data["train_y"], n, torch.Generator().manual_seed(seed))
    # a copy of n images (the full split may be memory-mapped and larger than memory)
    full = len(data["train_y"])
    return data | {
        "train_x": data["train_x"][rows],
        "train_y": data["train_y"][rows],
        "train_rows": rows,
        "train_full": full,
    }


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


def load_teacher(t: Teacher, data: dict) -> tuple[torch.nn.Module, dict]:
    """A frozen teacher and its metadata, checked against params (arch) and the data (classes, channels)."""
    model, meta = checkpoint.load_model(t.path, expect={"arch": t.arch})
    facts = data_facts(data)
    want = {k: facts[k] for k in ("num_classes", "in_channels")}
    checkpoint.check_fields(meta, want, f"teacher {t.name!r} ({t.path})", against="the data has")
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


def knowledge_source(
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
        rows = data.get("train_rows")  # train_subset: the logits of its images, by position in the split
        n = data["train_full"] if rows is not None else len(data["train_y"])
        if not tables or any(t.shape[0] != n for t in tables):
            raise KdpipeError(
                "cached targets do not match the training split; re-run infer-targets (dvc repro)"
            )
        return CachedLogits(torch.stack(tables), rows)
    if teachers is None or job.augment:
        return teachers
    # without augmentation every epoch sees the same images: run the teachers once, look them up by idx
    plain = make_loader(data, "train", batch_size=EVAL_BATCH, device=device)
    if cls.precompute_targets:
        teachers.to(device)
        return CachedLogits(torch.cat([teachers.logits(batch).cpu() for batch in plain], dim=1))
    n = len(data["train_y"])
    if cls.needs_features and job.kind in DISTILLED and feature_bytes(teachers, plain) * n <= FEATURE_CACHE:
        log.info(
            "%s: teacher features of the %d training images computed once (no augmentation)", job.name, n
        )
        return CachedFeatures(teachers, plain, n)
    return teachers


# jobs whose feature teachers may be cached (knowledge jobs read val too)
DISTILLED = ("student", "generation")
FEATURE_CACHE = 2 << 30  # bytes of teacher features one job may hold in memory; more runs the teachers online


def feature_bytes(teachers: OnlineTeachers, loader) -> int:
    """Bytes of the teachers' stage features and logits for one training image (a dry run on one)."""
    x = next(iter(loader))[0][:1]
    feats, z = teachers.to(x.device).features((x, None, None))
    return 4 * (sum(f[0].numel() for fs in feats for f in fs) + z[:, 0].numel())


Maker = Callable[[], nn.Module]


def build_student(job: Job, facts: dict) -> tuple[Maker | None, nn.Module | None, list[str]]:
    """(a maker of fresh students, the student with its `init` weights applied, the parameter names that
    `init.freeze_epochs` keeps frozen); (None, None, []) for knowledge jobs, which build their own nets."""

    def make_student() -> torch.nn.Module:  # a fresh student (DML peers ask for more)
        return create_model(job.arch, facts["num_classes"], facts["in_channels"], **job.arch_kwargs)

    if job.params.get("selected_from") and job.params.get("input_size") != facts["input_size"]:
        raise KdpipeError(
            f"{job.name}: select-student chose input size {job.params['input_size']} but the data is "
            f"{facts['input_size']} px; list candidates at data.image_size in select.candidates"
        )
    make = make_student if job.arch is not None else None
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
    return make, student, freeze
