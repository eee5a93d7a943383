"""A job's inputs: the prepared data, its one loader, and the teachers checked against params and data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from pipeline import checkpoint
from pipeline.data.cache import load_prepared
from pipeline.data.loaders import make_loader as data_loader
from pipeline.errors import KdpipeError
from pipeline.job_spec import Job, Teacher
from pipeline.sources import OnlineTeachers, teacher_norm


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
