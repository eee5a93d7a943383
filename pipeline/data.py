"""Data sources -> prepared uint8 tensors; a device-resident loader with on-device augmentation.

`prepare(DataParams, seed)` returns a dict of uint8 image tensors (N, C, H, W), int64 labels, the
class names and the per-channel mean/std of the training split (values in [0, 1]). The validation
split is held out of the *training* split by seed, never taken from the test split.

`DeviceLoader` keeps a split on the device and yields `(x, y, idx)` batches: x normalised float,
y labels, idx the data-set index (used to look up cached targets). Augmentation (random crop with
zero padding, horizontal flip) runs on the device, drawn from a CPU generator seeded by
(seed, epoch), so a run is repeatable on any device and a resumed run sees the same batches.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.errors import KdpipeError
from pipeline.params import DataParams

log = logging.getLogger(__name__)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FLIP_DEFAULT = {"fashion_mnist": True, "mnist": False, "cifar10": True, "cifar100": True, "imagefolder": True, "synthetic": False}
Split = tuple[torch.Tensor, torch.Tensor]


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _fashion_debian() -> tuple[Split, Split] | None:
    if not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
        return None
    out = []
    for part in ("train", "t10k"):
        x = _read_idx(DEBIAN_FASHION / f"{part}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
        y = _read_idx(DEBIAN_FASHION / f"{part}-labels-idx1-ubyte.gz", 8)
        out.append((torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))))
    return out[0], out[1]


def _torchvision(name: str, p: DataParams) -> tuple[tuple[Split, Split], list[str]]:
    import torchvision.datasets as tvd

    cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(p.root, train=train, download=p.download)
        except RuntimeError:
            hint = "install Debian's dataset-fashion-mnist or " if name == "fashion_mnist" else ""
            raise KdpipeError(f"data set {name!r} not found under {p.root!r}; {hint}set data.download: true on a connected machine") from None
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
        splits.append((x.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)))
    return (splits[0], splits[1]), list(ds.classes)


def _imagefolder(p: DataParams) -> tuple[tuple[Split, Split], list[str]]:
    import torchvision.datasets as tvd
    import torchvision.transforms.functional as TF

    root, size = Path(p.root), p.image_size or 32
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise KdpipeError(f"ImageFolder root {root} needs train/ and test/ folders of class sub-folders; fix data.root")
    splits, classes = [], None
    for part in ("train", "test"):
        ds = tvd.ImageFolder(str(root / part))
        if classes is not None and ds.classes != classes:
            raise KdpipeError(f"{root}/test has classes {ds.classes} but train has {classes}; use the same class folders")
        classes = ds.classes
        xs = [TF.pil_to_tensor(TF.resize(ds.loader(path).convert("RGB"), [size, size], antialias=True)) for path, _ in ds.samples]
        splits.append((torch.stack(xs), torch.tensor(ds.targets, dtype=torch.int64)))
    return (splits[0], splits[1]), list(classes)


def _synthetic(p: DataParams, seed: int) -> tuple[tuple[Split, Split], list[str]]:
    """Separable toy classes: class k is a fixed random template plus per-image noise and a shift."""
    g = torch.Generator().manual_seed(1234 + seed)
    c, s, k = p.synthetic_channels, p.synthetic_size, p.synthetic_classes
    templates = torch.rand(k, c, s, s, generator=g) * 255

    def draw(n: int) -> Split:
        y = torch.arange(n) % k
        x = templates[y] * 0.6 + torch.rand(n, c, s, s, generator=g) * 0.4 * 255
        return x.round().clamp(0, 255).to(torch.uint8), y

    return (draw(p.synthetic_train), draw(p.synthetic_test)), [f"class{i}" for i in range(k)]


def _balanced_subset(y: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Indices of `n` items, as close to class-balanced as possible, in a seeded random order."""
    perm = torch.randperm(len(y), generator=g)
    order = torch.argsort(y[perm], stable=True)  # group by class, random within class
    ys = y[perm][order]
    rank = torch.arange(len(y)) - torch.searchsorted(ys, ys)  # position within its class
    pick = perm[order][torch.argsort(rank, stable=True)][:n]  # round-robin over classes
    return pick.sort().values


def prepare(p: DataParams, seed: int) -> dict:
    """Load the source, hold out a validation split by seed, subset, and compute mean/std."""
    if p.source == "synthetic":
        (train, test), classes = _synthetic(p, seed)
    elif p.source == "imagefolder":
        (train, test), classes = _imagefolder(p)
    elif p.source == "fashion_mnist" and (deb := _fashion_debian()) is not None:
        (train, test), classes = deb, FASHION_CLASSES
        log.info("Fashion-MNIST from Debian's dataset-fashion-mnist (%s)", DEBIAN_FASHION)
    else:
        (train, test), classes = _torchvision(p.source, p)
    g = torch.Generator().manual_seed(seed)
    if not 0 <= p.val_size < len(train[1]):
        raise KdpipeError(f"data.val_size={p.val_size} must be in [0, {len(train[1])}); lower it")
    val_idx = _balanced_subset(train[1], p.val_size, g)
    keep = torch.ones(len(train[1]), dtype=torch.bool)
    keep[val_idx] = False
    tr_idx = keep.nonzero().squeeze(1)
    if p.train_subset:
        tr_idx = tr_idx[_balanced_subset(train[1][tr_idx], p.train_subset, g)]
    te_idx = _balanced_subset(test[1], p.test_subset, g) if p.test_subset else torch.arange(len(test[1]))
    x_train = train[0][tr_idx].float() / 255
    return {
        "train_x": train[0][tr_idx].contiguous(), "train_y": train[1][tr_idx].contiguous(),
        "val_x": train[0][val_idx].contiguous(), "val_y": train[1][val_idx].contiguous(),
        "test_x": test[0][te_idx].contiguous(), "test_y": test[1][te_idx].contiguous(),
        "class_names": classes, "source": p.source,
        "mean": x_train.mean(dim=(0, 2, 3)).tolist(), "std": x_train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist(),
        "flip": FLIP_DEFAULT[p.source] if p.flip is None else p.flip, "pad": p.pad,
    }


def summary(d: dict) -> dict:
    """Plain numbers describing a prepared data set (for metrics.json)."""
    return {"train": len(d["train_y"]), "val": len(d["val_y"]), "test": len(d["test_y"]),
            "classes": len(d["class_names"]), "channels": int(d["train_x"].shape[1]), "size": int(d["train_x"].shape[-1])}


class DeviceLoader:
    """Yields `(x, y, idx)` from a split kept on `device` as uint8; augmentation on the device.

    With `world_size > 1` each rank takes its own slice of the same per-epoch permutation, and
    the batch size is the per-rank share of the global `batch_size`.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: list[float], std: list[float], *, batch_size: int,
                 device: torch.device | str = "cpu", shuffle: bool = False, augment: bool = False, pad: int = 0,
                 flip: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False) -> None:
        self.x, self.y = x.to(device), y.to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.batch_size = max(1, batch_size // world_size)
        self.device, self.shuffle, self.augment, self.pad, self.flip = torch.device(device), shuffle, augment, pad, flip
        self.seed, self.rank, self.world_size, self.channels_last = seed, rank, world_size, channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.y)
        if not self.shuffle:
            idx = torch.arange(n)
        else:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        if self.world_size > 1:
            per = n // self.world_size  # equal shares so every rank takes the same number of steps
            idx = idx[self.rank * per:(self.rank + 1) * per] if not self.shuffle else idx[self.rank::self.world_size][:per]
        return idx

    def __len__(self) -> int:
        n = len(self.y) // self.world_size if self.world_size > 1 else len(self.y)
        return (n + self.batch_size - 1) // self.batch_size

    def _augment(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = xb.shape
        if self.pad:
            p = self.pad
            shifts = torch.randint(0, 2 * p + 1, (2, b), generator=g).to(self.device)
            padded = torch.nn.functional.pad(xb, (p, p, p, p))
            rows = (shifts[0][:, None] + torch.arange(h, device=self.device))[:, :, None]
            cols = (shifts[1][:, None] + torch.arange(w, device=self.device))[:, None, :]
            xb = padded[torch.arange(b, device=self.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            mask = (torch.rand(b, generator=g) < 0.5).to(self.device).view(-1, 1, 1, 1)
            xb = torch.where(mask, xb.flip(3), xb)
        return xb

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        idx = self._indices().to(self.device)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7919 * (self.rank + 1))
        for s in range(0, len(idx), self.batch_size):
            bi = idx[s:s + self.batch_size]
            xb = self.x[bi].float()
            if self.augment:
                xb = self._augment(xb, g)
            xb = (xb - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[bi], bi


def raw_paths(p: DataParams) -> list[str]:
    """The raw files a source reads (DVC deps of prepare-data): changing one re-prepares the data."""
    if p.source == "imagefolder":
        return [p.root]
    if p.source == "fashion_mnist" and (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
        return sorted(str(f) for f in DEBIAN_FASHION.glob("*-ubyte.gz"))
    return []
