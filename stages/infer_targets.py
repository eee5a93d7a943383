"""infer-targets: one teacher's logits on the un-augmented train and val splits (dvc.yaml runs it `foreach` teacher)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import typer

from pipeline import checkpoint
from pipeline.data import DeviceLoader
from pipeline.errors import KdpipeError
from pipeline.evaluate import infer
from pipeline.params import MODEL_SECTIONS
from pipeline.checks import load_params
from pipeline.runner import check_teacher, load_data
from pipeline.runtime import select_device
from stages import DATA, command, model_path, targets_path


def compute_targets(model: nn.Module, data: dict, device: torch.device | str = "cpu", batch_size: int = 512) -> dict:
    """{"train": (N_train, C), "val": (N_val, C)} float32 logits in data-set order, no shuffle, no augmentation."""
    model = model.to(device).eval()
    out = {}
    for split in ("train", "val"):
        loader = DeviceLoader(data[f"{split}_x"], data[f"{split}_y"], data["mean"], data["std"], batch_size=batch_size,
                              device=device, shuffle=False, augment=False)
        out[split] = infer(model, loader).float() if len(data[f"{split}_y"]) else torch.zeros(0, len(data["class_names"]))
    return out


@command("infer-targets")
def infer_targets(name: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
                  params: Path = typer.Option(Path("params.yaml"), help="params file")) -> None:
    """Write models/targets/<name>.pt: the teacher's logits on un-augmented train/val images, for targets: cached."""
    p = load_params(params)
    section, _, key = name.rpartition("/")  # `<section>/<n>` (e.g. students/kd) or a bare teacher name
    if (section or "teachers") not in MODEL_SECTIONS or key not in getattr(p, section or "teachers"):
        raise KdpipeError(f"no model {name!r} in {params}; name a key of teachers, or <section>/<name> (known teachers: "
                          f"{', '.join(p.teachers) or 'none'})")
    if p.base.threads:
        torch.set_num_threads(p.base.threads)
    path, data = model_path(name), load_data(DATA)
    model, art = checkpoint.load_model(path)
    check_teacher(art, data, name)
    targets = compute_targets(model, data, select_device(p.base.device), p.evaluate.batch_size)
    targets.update(teacher=name, teacher_sha256=checkpoint.sha256(path), augmented=False)
    checkpoint.save(targets, targets_path(name))  # atomic: temporary file + rename
    shapes = f"train {tuple(targets['train'].shape)}, val {tuple(targets['val'].shape)}"
    typer.echo(f"targets {name}: {shapes} -> {targets_path(name)}")
