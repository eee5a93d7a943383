"""Prepared data and the device-resident loader."""
from __future__ import annotations

import torch

from pipeline.data import DeviceLoader, prepare, summary
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
    assert any(torch.allclose(padded[:, i:i + 16, j:j + 16], target, atol=1e-3) for i in range(5) for j in range(5))


def test_ddp_shards_are_disjoint(tiny_data):
    parts = [torch.cat([i for _, _, i in loader(tiny_data, shuffle=True, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 224
    assert not set(parts[0].tolist()) & set(parts[1].tolist())
