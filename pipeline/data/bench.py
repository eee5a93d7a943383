"""Loader throughput: images/s of the streaming loader alone against a training step of mobilenet_v3_small.

`throughput()` generates an ImageFolder of PNGs in a temporary folder (class k = a disc of colour k
on noise), prepares it with prepare-data's code at `size` px, then times (1) one epoch of the
streaming loader (memmap -> workers -> pinned -> device, random-resized-crop + flip on the device)
and (2) SGD steps of torchvision's mobilenet_v3_small (random weights) on device-resident batches.
A ratio above 1 means the loader keeps up with training.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.build import prepare_to
from pipeline.data.cache import load_prepared
from pipeline.data.loaders import make_loader, split_mb
from pipeline.data.params import AugmentParams, DataParams, ImageFolderParams

log = logging.getLogger(__name__)


def make_imagefolder(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> Path:
    """Write n PNGs (size x size, RGB) as root/<class>/<i>.png; returns root."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 255, (classes, 3))
    for i in range(n):
        k = i % classes
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
        r, cx, cy = rng.integers(size // 6, size // 3), *rng.integers(size // 3, 2 * size // 3, 2)
        ImageDraw.Draw(im).ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in colours[k]))
        im.save(root / f"c{k}" / f"{i}.png")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rate(loader, device: torch.device, steps: int, classes: int) -> float:
    import torchvision

    # NHWC as kdpipe's fit trains (optim.channels_last), so the rate is the one a training stage reaches
    model = torchvision.models.mobilenet_v3_small(num_classes=classes).to(device).train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    it, seen, t0 = iter(loader), 0, 0.0
    for s in range(steps + 2):  # 2 warm-up steps (allocator, kernels) are not timed
        if s == 2:
            _sync(device)
            t0 = time.perf_counter()
        x, y, _ = next(it)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y) if s >= 2 else 0
    _sync(device)
    return seen / (time.perf_counter() - t0)


def throughput(
    n: int = 20000,
    size: int = 96,
    *,
    batch_size: int = 128,
    workers: int = 4,
    steps: int = 10,
    device: str | torch.device = "cpu",
    classes: int = 10,
) -> dict:
    """Images/s of the streaming loader (one epoch) and of mobilenet_v3_small training steps, on `device`."""
    device = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="kdpipe-throughput-") as td:
        t0 = time.perf_counter()
        make_imagefolder(Path(td) / "images", n, size, classes)
        gen_s = time.perf_counter() - t0
        p = DataParams(
            source="imagefolder",
            image_size=size,
            val_size=0,
            workers=workers,
            augment=AugmentParams(crop="random_resized", flip=True),
            imagefolder=ImageFolderParams(root=str(Path(td) / "images"), test_fraction=0.01),
        )
        t0 = time.perf_counter()
        prepare_to(p, 0, Path(td) / "prepared")
        prep_s = time.perf_counter() - t0
        data = load_prepared(Path(td) / "prepared")
        stream = make_loader(
            data, "train", batch_size=batch_size, device=device, train=True, resident_max_mb=0
        )
        _sync(device)
        t0, seen = time.perf_counter(), 0
        for _, y, _ in stream:
            seen += len(y)
        _sync(device)
        loader_ips = seen / (time.perf_counter() - t0)
        resident = make_loader(
            data, "train", batch_size=batch_size, device=device, train=True, resident_max_mb=1e12
        )
        train_ips = _train_rate(resident, device, steps, classes)
        out = {
            "n": n,
            "train_images": seen,
            "size": size,
            "batch_size": batch_size,
            "workers": workers,
            "device": str(device),
            "prepared_mb": round(split_mb(data, "train"), 1),
            "generate_s": round(gen_s, 2),
            "prepare_s": round(prep_s, 2),
            "loader_images_per_s": round(loader_ips, 1),
            "train_images_per_s": round(train_ips, 1),
            "loader_over_train": round(loader_ips / train_ips, 2),
        }
    log.info("throughput: %s", out)
    return out


def loader_markdown(res: dict) -> str:
    """The throughput figures as a markdown table, with the verdict (ratio > 1: the loader keeps up)."""
    rows = [f"| {k} | {v} |" for k, v in res.items()]
    verdict = "keeps up with" if res["loader_over_train"] > 1 else "is slower than"
    return "\n".join(
        [
            "# Loader throughput: streaming memmap loader vs training",
            "",
            f"{res['n']} generated PNGs at {res['size']} px, batch {res['batch_size']}, "
            f"{res['workers']} workers on {res['device']}: the loader {verdict} mobilenet_v3_small training "
            f"({res['loader_over_train']}x).",
            "",
            "| figure | value |",
            "|---|---|",
            *rows,
            "",
        ]
    )
