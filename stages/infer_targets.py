"""infer-targets: one teacher's logits on the un-augmented train and val splits (dvc.yaml runs it `foreach`
teacher)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import typer

from pipeline import checkpoint
from pipeline.checks import load_params
from pipeline.evaluate import infer
from pipeline.job_inputs import load_data, load_teacher, make_loader
from pipeline.job_spec import Teacher
from pipeline.runtime import prepare
from stages import DATA, command, say, targets_path
from stages._layout import teacher_refs


def compute_targets(
    model: nn.Module, data: dict, device: torch.device | str = "cpu", batch_size: int = 512
) -> dict:
    """{"train": (N_train, C), "val": (N_val, C)} float32 logits in data-set order, no shuffle, no
    augmentation."""
    model = model.to(device).eval()
    out = {}
    for split in ("train", "val"):
        loader = make_loader(data, split, batch_size=batch_size, device=device)
        out[split] = (
            infer(model, loader).float()
            if len(data[f"{split}_y"])
            else torch.zeros(0, len(data["class_names"]))
        )
    return out


@command("infer-targets")
def infer_targets(
    name: str = typer.Argument(..., help="teacher name (a key of params.teachers, or <section>/<name>)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Write models/knowledge/targets/<name>.pt: the teacher's logits on un-augmented train/val images, for
    targets: cached."""
    p = load_params(params)
    ref = Teacher(*teacher_refs(p, [name])[0])
    # base.device and base.threads, like every job
    device = prepare(p.base.device, p.base.threads, p.base.seed)[0]
    data = load_data(DATA)
    targets = compute_targets(load_teacher(ref, data)[0], data, device, p.evaluate.batch_size)
    targets.update(teacher=name, teacher_sha256=checkpoint.sha256(ref.path), augmented=False)
    checkpoint.save(targets, targets_path(name))  # atomic: temporary file + rename
    say(
        f"targets {name}: train {tuple(targets['train'].shape)}, val {tuple(targets['val'].shape)} -> "
        f"{targets_path(name)}"
    )
