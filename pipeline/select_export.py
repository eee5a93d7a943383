"""One select-student candidate made deployable: built untrained, BatchNorm statistics set, exported to
ONNX and (for `precision: int8`) quantized with the recipe the export stage would ship."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.onnx_write import Normalized, export_onnx
from pipeline.quantize import quantize_int8, recipe_for
from pipeline.select_space import Candidate, SelectParams, build, describe

MEAN, STD = 0.5, 0.25  # normalisation inside the untrained graph; any fixed values time the same


def calibrate_bn(wrapped: torch.nn.Module, images: np.ndarray, batch: int = 8) -> None:
    """Running mean/var of every BatchNorm := the plain average over `images` (momentum None); then eval."""
    bns = [m for m in wrapped.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    old = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the order and number of batches do not bias the statistics
    wrapped.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            wrapped(torch.from_numpy(images[i : i + batch].astype(np.float32) / 255.0))
    for m, mom in zip(bns, old):
        m.momentum = mom
    wrapped.eval()


def deployable(c: Candidate, facts: dict, sp: SelectParams, recipe: dict, folder: Path) -> tuple[dict, Path]:
    """Build, count, calibrate, export (and quantize) one candidate; returns (row without latency, .onnx).

    `sp.exporter`: "legacy" (TorchScript, 0.2 s a model) or "dynamo" (as the export stage ships);
    their INT8 graphs have the same nodes and time alike.
    """
    ch, n = facts["in_channels"], facts["num_classes"]
    model = build(c, n, ch, sp.seed)
    row: dict[str, Any] = {"label": c.label, **c.key(), **describe(c, model, n, ch)}
    rng = np.random.default_rng(sp.seed)
    images = rng.integers(0, 256, (sp.calib_images, ch, c.input_size, c.input_size), dtype=np.uint8)
    calibrate_bn(Normalized(model, [MEAN] * ch, [STD] * ch), images)
    art = {
        "name": c.label,
        "arch": c.arch,
        "class_names": [str(i) for i in range(n)],
        "input_size": c.input_size,
        "in_channels": ch,
        "mean": [MEAN] * ch,
        "std": [STD] * ch,
    }
    slug = hashlib.sha256(c.label.encode()).hexdigest()[:12]
    fp32 = path = folder / f"{slug}.onnx"
    row["exporter"] = export_onnx(model, art, "untrained", fp32, exporter=sp.exporter)
    if sp.precision == "int8":
        path = folder / f"{slug}.int8.onnx"
        kw = dict(recipe)  # export's recipe choice (auto: the arch's family, as export ships it)
        quantize_int8(
            fp32, path, images, n=len(images), recipe=recipe_for(c.arch, kw.pop("recipe", "manual")), **kw
        )
    row["size_bytes"] = path.stat().st_size
    row["size_mb"] = row["size_bytes"] / 1e6
    return row, path
