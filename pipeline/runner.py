"""Orchestration shared by the training stages: data -> loaders, knowledge source, method, fit, artifact.

`train_model` is what `train-teacher` and `distill` both call; stages only turn params and paths
into its arguments. Nothing here reads params.yaml or decides a path on its own.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline import checkpoint
from pipeline.data import augments_data, load_prepared, make_loader
from pipeline.errors import KdpipeError
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.params import BaseParams, ModelParams, to_dict
from pipeline.runtime import is_main, prepare
from pipeline.sources import CachedLogits, KnowledgeSource, OnlineTeachers
from pipeline.tracking import Tracker
from pipeline.train import FitResult, Loaders, fit

log = logging.getLogger(__name__)


@dataclass
class RunPaths:
    """Where one model's training writes (chosen by the stage)."""

    artifact: Path  # the model artifact (.pt)
    state: Path  # resumable state (last.pt) in a persist: true output
    metrics_dir: Path  # dvclive directory: metrics.json + plots


def load_data(path: str | Path) -> dict:
    data = load_prepared(path)  # data/prepared (memmapped) or a torch-saved data.pt
    if not isinstance(data, dict) or "train_x" not in data:
        raise KdpipeError(f"{path}: not a prepared data set; re-run prepare-data")
    return data


def data_facts(data: dict) -> dict:
    return {"num_classes": len(data["class_names"]), "in_channels": int(data["train_x"].shape[1]),
            "input_size": int(data["train_x"].shape[-1])}


def make_loaders(data: dict, spec: ModelParams, seed: int, device: torch.device, rank: int = 0, world: int = 1,
                 split: str = "train") -> Loaders:
    """Training loader (shuffled, augmented per spec) and validation loader (plain, full split)."""
    cl = device.type == "cuda" and spec.optim.channels_last
    train = make_loader(data, split, batch_size=spec.optim.batch_size, device=device, train=True, augment=spec.augment,
                        seed=seed, rank=rank, world=world, channels_last=cl)
    val = make_loader(data, "val", batch_size=512, device=device, channels_last=cl)
    return Loaders(train, val if len(data["val_y"]) else None)


def check_teacher(art: dict, data: dict, name: str) -> None:
    facts = data_facts(data)
    if art["num_classes"] != facts["num_classes"] or art["in_channels"] != facts["in_channels"]:
        raise KdpipeError(f"teacher {name!r} has {art['num_classes']} classes/{art['in_channels']} channels but the data has "
                          f"{facts['num_classes']}/{facts['in_channels']}; retrain it on this data (dvc repro)")


def build_source(spec: ModelParams, teacher_paths: list[Path], data: dict, target_paths: list[Path] | None = None) -> KnowledgeSource | None:
    """Online frozen teachers, or cached logits (K, N, C) when `spec.targets == 'cached'`."""
    if not spec.teachers:
        return None
    if spec.targets == "cached":
        augments = spec.augment and augments_data(data)
        if augments and not spec.cached_with_augment:
            raise KdpipeError("cached targets were computed on un-augmented images; set augment: false, or cached_with_augment: true to accept it")
        if REGISTRY[spec.method].needs_features:
            raise KdpipeError(f"method {spec.method!r} needs teacher features, which are not cached; set targets: online")
        tables = [checkpoint.load(p, "cached targets")["train"] for p in (target_paths or [])]
        if not tables or any(t.shape[0] != len(data["train_y"]) for t in tables):
            raise KdpipeError("cached targets do not match the training split; re-run infer-targets (dvc repro)")
        return CachedLogits(torch.stack(tables))
    teachers = []
    for name, path in zip(spec.teachers, teacher_paths):
        model, art = checkpoint.load_model(path)
        check_teacher(art, data, name)
        teachers.append(model)
    return OnlineTeachers(teachers)


def code_version() -> str:
    """Hash of kdpipe's library source: a run only resumes state written by the same code."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(*parts: Any) -> str:
    """A short hash of params, inputs and code; resumption only continues a run with the same fingerprint.

    DVC re-runs a stage when its params, data or code change; the code hash makes sure such a re-run
    trains anew instead of "resuming" a finished state written by other code.
    """
    return hashlib.sha256(json.dumps([code_version(), *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_model(name: str, kind: str, spec: ModelParams, base: BaseParams, data: dict, paths: RunPaths,
                tracker_factory: Callable[[Path], Tracker], teacher_paths: list[Path] = (), target_paths: list[Path] | None = None,
                assets: dict | None = None, extra_fingerprint: Any = None) -> FitResult:
    """Build the method for `spec`, train it with `fit`, and write each exported network as an artifact."""
    seed = base.seed + spec.seed
    device, rank, world = prepare(base.device, base.threads, seed)
    facts = data_facts(data)
    make = lambda: create_model(spec.arch, facts["num_classes"], facts["in_channels"], **spec.arch_kwargs)  # noqa: E731
    source = build_source(spec, list(teacher_paths), data, target_paths)
    loaders = make_loaders(data, spec, seed, device, rank, world)
    ctx = Context(student=make(), source=source, epochs=spec.optim.epochs, steps_per_epoch=len(loaders.train), make_student=make,
                  assets=assets or {}, **facts)
    method = build_method(spec.method, ctx, spec.args)
    fp = fingerprint(to_dict(spec), base.seed, [str(checkpoint.sha256(p)) for p in teacher_paths],
                     data["train_y"].shape[0], data["source"], extra_fingerprint)
    tracker = tracker_factory(paths.metrics_dir) if is_main() else None
    result = fit(method, loaders, spec.optim, tracker, device, paths.state, fp, desc=f"{kind} {name}")
    if is_main():
        for suffix, net in method.exported().items():
            art = checkpoint.make_artifact(net, arch=spec.arch, arch_kwargs=spec.arch_kwargs, mean=data["mean"], std=data["std"],
                                           class_names=data["class_names"], params=to_dict(spec), kind=kind,
                                           name=name + suffix, metrics={k: v for k, v in result.final.items() if isinstance(v, (int, float))},
                                           **facts)
            out = paths.artifact if not suffix else paths.artifact.with_name(f"{paths.artifact.stem}{suffix}.pt")
            checkpoint.save(art, out)
        if tracker is not None:
            tracker.close({"resumed_from_epoch": result.resumed_from})
    return result
