"""Prepared data: the data params schema, splits, resizing, and the device-resident loader."""

from __future__ import annotations

import pytest
import torch

from pipeline.checks import parse_params
from pipeline.data.augment import resize
from pipeline.data.build import prepare, summary
from pipeline.data.loaders import DeviceLoader
from pipeline.data.params import SyntheticParams
from pipeline.data.sources import SOURCES, raw_paths
from pipeline.errors import KdpipeError
from pipeline.params import DataParams


def loader(d, **kw):
    return DeviceLoader(d["train_x"], d["train_y"], d["mean"], d["std"], batch_size=64, **kw)


def test_prepare_holds_validation_out_of_training(tiny_data):
    s = summary(tiny_data)
    assert (s["train"], s["val"], s["test"], s["classes"]) == (448, 64, 256, 4)
    assert tiny_data["train_x"].dtype == torch.uint8
    # validation is class-balanced: 64 images over 4 classes
    assert torch.bincount(tiny_data["val_y"]).tolist() == [16, 16, 16, 16]
    # disjoint: no validation image appears among the training images
    flat_tr = {bytes(x.numpy()) for x in tiny_data["train_x"]}
    assert not any(bytes(x.numpy()) in flat_tr for x in tiny_data["val_x"])


def test_train_subset_is_balanced_and_seeded():
    p = DataParams(source="synthetic", val_size=32, train_subset=100)
    a, b, c = prepare(p, 0), prepare(p, 0), prepare(p, 1)
    assert len(a["train_y"]) == 100 and torch.bincount(a["train_y"]).tolist() == [25, 25, 25, 25]
    assert torch.equal(a["train_x"], b["train_x"]) and not torch.equal(a["val_x"], c["val_x"])


def test_batches_are_x_y_idx_and_cover_the_split_once(tiny_data):
    seen = torch.cat([idx for _, _, idx in loader(tiny_data, shuffle=True)])
    assert sorted(seen.tolist()) == list(range(448))
    x, y, idx = next(iter(loader(tiny_data, shuffle=True)))
    assert x.dtype == torch.float32 and x.shape == (64, 1, 16, 16)
    assert torch.equal(y, tiny_data["train_y"][idx])


def test_augmentation_is_deterministic_per_seed_and_epoch(tiny_data):
    a = loader(tiny_data, shuffle=True, augment=True, pad=2, flip=True, seed=3)
    b = loader(tiny_data, shuffle=True, augment=True, pad=2, flip=True, seed=3)
    xa, xb = next(iter(a))[0], next(iter(b))[0]
    assert torch.equal(xa, xb)
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], xb)  # another epoch, other crops and order


def test_crop_keeps_content_shifted(tiny_data):
    plain = loader(tiny_data)
    aug = loader(tiny_data, augment=True, pad=2, seed=0)
    x0, xa = next(iter(plain))[0], next(iter(aug))[0]
    assert xa.shape == x0.shape and not torch.equal(xa, x0)
    # some crop of the padded original equals the augmented image (pad value = 0 before normalisation)
    raw = tiny_data["train_x"][0].float()
    padded = torch.nn.functional.pad(raw, (2, 2, 2, 2))
    target = xa[0] * aug.std[0] + aug.mean[0]
    assert any(
        torch.allclose(padded[:, i : i + 16, j : j + 16], target, atol=1e-3)
        for i in range(5)
        for j in range(5)
    )


def test_ddp_shards_are_disjoint(tiny_data):
    parts = [
        torch.cat([i for _, _, i in loader(tiny_data, shuffle=True, rank=r, world_size=2)]) for r in (0, 1)
    ]
    assert len(parts[0]) == len(parts[1]) == 224
    assert not set(parts[0].tolist()) & set(parts[1].tolist())


def test_data_section_parses_nested_blocks_and_checks_ranges():
    raw = {
        "data": {
            "source": "imagefolder",
            "image_size": 96,
            "resize": "plain",
            "augment": {"crop": "random_resized", "scale": [0.5, 1.0]},
            "imagefolder": {"root": "x", "strict": True},
            "cifar10": {"download": True},
        }
    }
    d = parse_params(raw).data
    assert (d.block.root, d.block.strict, d.augment.scale, d.cifar10.download, d.synthetic.size) == (
        "x",
        True,
        [0.5, 1.0],
        True,
        16,
    )
    for bad, msg in (
        ({"augment": {"scale": [0.9, 0.2]}}, "low <= high"),
        ({"synthetic": {"size": 2}}, "synthetic.size: must be >= 4"),
        ({"augment": {"crop": "zoom"}}, "'zoom' is not one of"),
        ({"synthetic_train": 5}, "unknown key"),
    ):
        with pytest.raises(KdpipeError, match=msg):
            parse_params({"data": bad})


def test_every_source_is_registered_with_raw_paths():
    assert set(SOURCES) == {"fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"}
    assert raw_paths(DataParams(source="synthetic")) == []
    assert raw_paths(DataParams(source="cifar10")) == ["data/raw/cifar-10-batches-py"]


def test_resize_policies():
    x = (torch.arange(40) * 3).expand(1, 1, 20, 40).to(torch.uint8)  # a ramp: column j is 3 j (0..117)
    # shorter side already 20: no scaling, the centre 20 x 20 square is columns 10..29
    assert torch.equal(resize(x, 20, "shorter_center"), x[..., 10:30])
    assert resize(x, 20, "plain").shape == (1, 1, 20, 20)
    # plain halves the width; on a linear ramp the antialiased filter gives the mean of columns 2j and 2j+1:
    # 3 (2j + 0.5) = 6j + 1.5, rounded to uint8 (within 0.5); rows are unchanged (height 20 -> 20)
    got = resize(x, 20, "plain")[0, 0, :, 1:-1].float()  # interior columns (the edges clamp)
    want = 6 * torch.arange(1, 19.0) + 1.5
    assert (got - want).abs().max() <= 0.5


def test_synthetic_at_another_image_size():
    d = prepare(
        DataParams(
            source="synthetic", val_size=8, image_size=32, synthetic=SyntheticParams(train=40, test=8)
        ),
        0,
    )
    assert d["train_x"].shape == (32, 1, 32, 32) and d["test_x"].shape == (8, 1, 32, 32)


def test_subset_larger_than_the_data_is_refused():
    with pytest.raises(KdpipeError, match="train_subset=600 but the split has 448"):
        prepare(DataParams(source="synthetic", val_size=64, train_subset=600), 0)
