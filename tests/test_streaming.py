"""The loader factory: device-resident and streaming loaders give the same batches; on-device
random-resized-crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data import (
    DataParams,
    DeviceLoader,
    StreamLoader,
    load_prepared,
    make_loader,
    prepare,
    prepare_to,
)
from pipeline.data.augment import Augment
from pipeline.data.params import AugmentParams, SyntheticParams


def data_with(crop: str, **aug) -> dict:
    """Synthetic 3x24x24 images, 300 train / 20 val / 40 test, with the given augmentation."""
    p = DataParams(
        source="synthetic",
        val_size=20,
        synthetic=SyntheticParams(train=320, test=40, size=24, channels=3),
        augment=AugmentParams(crop=crop, flip=True, **aug),
    )
    return prepare(p, seed=0)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(loader)


@pytest.mark.parametrize("crop", ["pad_crop", "random_resized"])
@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_streaming_equals_device_batches(crop, rank, world):
    d = data_with(crop, pad=3)
    kw = {"batch_size": 64, "train": True, "seed": 5, "rank": rank, "world": world}
    dev, stream = (
        make_loader(d, "train", resident_max_mb=1e9, **kw),
        make_loader(d, "train", resident_max_mb=0, workers=0, **kw),
    )
    assert isinstance(dev, DeviceLoader) and isinstance(stream, StreamLoader)
    for epoch in (0, 3):
        dev.set_epoch(epoch)
        stream.set_epoch(epoch)
        a, b = batches(dev), batches(stream)
        # 300 images, world 1: ceil(300 / 64) = 5 batches; world 2: 150 per rank, batch 32 -> ceil(150 / 32) =
        # 5
        assert len(a) == len(b) == len(dev) == len(stream) == 5
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_streaming_from_memmap_with_workers_matches(tmp_path):
    p = DataParams(
        source="synthetic",
        val_size=20,
        synthetic=SyntheticParams(train=200, test=40, size=16, channels=3),
        augment=AugmentParams(crop="random_resized", flip=True),
    )
    prepare_to(p, 0, tmp_path / "prepared")
    d = load_prepared(tmp_path / "prepared")
    kw = {"batch_size": 32, "train": True, "seed": 1}
    stream = make_loader(d, "train", resident_max_mb=0, workers=2, **kw)
    stream.set_epoch(2)
    dev = make_loader(d, "train", **kw)
    dev.set_epoch(2)
    for (xa, ya, ia), (xb, yb, ib) in zip(dev, stream, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_load_prepared_is_memory_mapped_and_equals_in_memory(tmp_path):
    p = DataParams(
        source="synthetic", val_size=16, synthetic=SyntheticParams(train=64, test=32, size=8, channels=3)
    )
    prepare_to(p, 0, tmp_path / "prepared")
    d, mem = load_prepared(tmp_path / "prepared"), prepare(p, 0)
    assert {k for k in mem if k != "notes"} <= set(d)
    for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(d[k], mem[k]), k
    assert (
        d["class_names"] == mem["class_names"]
        and np.allclose(d["mean"], mem["mean"])
        and d["pad"] == mem["pad"]
    )
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert str(tmp_path / "prepared" / "train.u8") in maps  # opened as a mapping, not read into memory
    # 48 train images x 3 x 8 x 8 bytes = 9216 bytes on disk
    assert (tmp_path / "prepared" / "train.u8").stat().st_size == 48 * 3 * 8 * 8


def test_random_resized_crop_is_seeded_per_epoch():
    d = data_with("random_resized")
    a, b = (make_loader(d, "train", batch_size=50, train=True, seed=3) for _ in range(2))
    first = next(iter(a))[0]
    assert torch.equal(first, next(iter(b))[0])
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], first)
    plain = next(iter(make_loader(d, "train", batch_size=50, train=True, seed=3, augment=False)))[0]
    assert not torch.equal(plain, first)  # augmentation changed the images (same order: same seed and epoch)


def test_random_resized_crop_geometry():
    # a horizontal ramp: pixel (i, j) = 8 j, so 32 columns run 0..248
    x = (torch.arange(32.0) * 8).expand(2, 1, 32, 32).contiguous()
    g = torch.Generator().manual_seed(0)
    same = Augment(crop="random_resized", scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, g)
    assert torch.allclose(same, x, atol=1e-3)  # area 1, ratio 1: the identity grid
    half = Augment(crop="random_resized", scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=True)(x, g)
    # area 1/4, square -> side fraction 1/2: each output column steps 8 * 1/2 = 4 (-4 when flipped)
    steps = half[:, 0, 5, 2:-2].diff(dim=1).abs()
    assert torch.allclose(steps, torch.full_like(steps, 4.0), atol=1e-3)


def test_val_and_test_loaders_are_plain_and_in_order():
    d = data_with("random_resized")
    x, y, idx = next(iter(make_loader(d, "val", batch_size=512)))
    assert idx.tolist() == list(range(20)) and torch.equal(y, d["val_y"])
    expect = (d["val_x"].float() - torch.tensor(d["mean"]).view(1, -1, 1, 1) * 255) / (
        torch.tensor(d["std"]).view(1, -1, 1, 1) * 255
    )
    assert torch.allclose(x, expect, atol=1e-5)


def test_throughput_measures_both_rates():
    from pipeline.data.bench import loader_markdown, throughput

    r = throughput(n=40, size=32, batch_size=16, workers=0, steps=1, classes=4)
    # 40 images, 1% test share rounds to 0: the epoch streams all 40
    assert r["train_images"] == 40 and r["loader_images_per_s"] > 0 and r["train_images_per_s"] > 0
    assert r["prepared_mb"] == round(40 * 3 * 32 * 32 / 2**20, 1)
    md = loader_markdown(r)  # what `make bench` writes to bench/results_loader.md
    assert "40 generated PNGs at 32 px" in md and ("keeps up with" in md) == (r["loader_over_train"] > 1)
