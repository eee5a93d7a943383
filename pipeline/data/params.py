"""The `data` params section: shared split/size/augmentation keys plus one block per source.

`source` picks a registered source (`pipeline.data.sources.SOURCES`); only that source's block is
read, blocks of other sources may be present or not. Every block is a frozen dataclass whose ranges
are checked when params load (`pipeline.config`). This module imports nothing from kdpipe but
`pipeline.config` and errors, so `pipeline.params` can import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.config import bounded
from pipeline.errors import KdpipeError


def _pair(name: str, pair: list[float]) -> None:
    if len(pair) != 2 or pair[0] > pair[1]:
        raise KdpipeError(f"{name}: expected [low, high] with low <= high, got {pair}")


@dataclass(frozen=True)
class AugmentParams:
    """Training augmentation, run on the device (see `pipeline.data.augment`)."""

    # pad_crop: small images; random_resized: >= 64 px
    crop: Literal["pad_crop", "random_resized", "none"] = "pad_crop"
    pad: int = bounded(4, ge=0, le=64)  # pad_crop: zero padding in pixels (0 = no crop)
    flip: bool | None = None  # horizontal flip; None = the source's default (off for digits)
    # random_resized: crop area as a fraction of the image
    scale: list[float] = bounded([0.35, 1.0], gt=0, le=1)
    # random_resized: crop aspect ratio (w / h) range
    ratio: list[float] = bounded([0.75, 1.3333], gt=0, le=10)

    def __post_init__(self) -> None:
        _pair("scale", self.scale)
        _pair("ratio", self.ratio)


@dataclass(frozen=True)
class TorchvisionParams:
    """fashion_mnist, mnist, cifar10, cifar100 (fashion_mnist first tries Debian's dataset-fashion-mnist)."""

    root: str = "data/raw"  # torchvision root (its own sub-folders, e.g. data/raw/cifar-10-batches-py)
    download: bool = False  # let torchvision download into root (only on request; never in tests)


@dataclass(frozen=True)
class ImageFolderParams:
    """A folder of class folders: root/{train,test}/<class>/*.png|jpg, or root/<class>/* (test split held
    out)."""

    root: str = "data/raw/images"  # the folder
    strict: bool = False  # true: refuse unreadable or non-plain images; false: skip/convert them, counted
    mode: Literal["auto", "rgb", "grey"] = "auto"  # auto: RGB if any image is colour, else grey
    # single-folder layout only: share held out as test, fixed seed
    test_fraction: float = bounded(0.2, gt=0, lt=1)


@dataclass(frozen=True)
class SyntheticParams:
    """Separable toy classes made from a seed (tests and smoke runs)."""

    train: int = bounded(512, ge=1)  # training images (before the validation split)
    test: int = bounded(256, ge=1)  # test images
    classes: int = bounded(4, ge=2, le=1000)  # number of classes
    size: int = bounded(16, ge=4, le=512)  # image side in pixels
    channels: int = bounded(1, ge=1, le=4)  # channels


@dataclass(frozen=True)
class DataParams:
    source: Literal["fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"] = (
        "fashion_mnist"
    )
    # images held out of the training split for validation (by seed, balanced)
    val_size: int = bounded(5000, ge=0)
    train_subset: int = bounded(0, ge=0)  # keep this many training images after the split (0 = all), balanced
    test_subset: int = bounded(0, ge=0)  # keep this many test images (0 = all); for quick profiles only
    # square side in pixels (0 = the source's own; ImageFolder 32)
    image_size: int = bounded(0, ge=0, le=1024)
    # shorter side to size + centre crop, or stretch
    resize: Literal["shorter_center", "plain"] = "shorter_center"
    augment: AugmentParams = field(default_factory=AugmentParams)
    resident_max_mb: float = bounded(2048.0, ge=0)  # a split up to this many MiB (uint8) lives on the device
    workers: int = bounded(4, ge=0, le=64)  # DataLoader processes when a split streams from disk
    fashion_mnist: TorchvisionParams = field(default_factory=TorchvisionParams)
    mnist: TorchvisionParams = field(default_factory=TorchvisionParams)
    cifar10: TorchvisionParams = field(default_factory=TorchvisionParams)
    cifar100: TorchvisionParams = field(default_factory=TorchvisionParams)
    imagefolder: ImageFolderParams = field(default_factory=ImageFolderParams)
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)

    @property
    def block(self):
        """The chosen source's own params block."""
        return getattr(self, self.source)
