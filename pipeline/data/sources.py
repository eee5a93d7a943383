"""Source registry: each source turns its params block into raw train/test parts (uint8 NCHW + labels).

A source registers `load(p, seed, alloc) -> Raw`, `raw_paths(p) -> list[str]` (the files it reads:
DVC dependencies of prepare-data), its default for horizontal flips (off for digits) and, where it can
count images without decoding them, `sizes(p) -> (train, test)` (check-params' size check). `alloc`
gives the buffer big sources decode into (in memory, or a scratch memmap when writing to disk).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.data.params import DataParams
from pipeline.data.registry import SOURCES, Alloc, Part, Raw, Source, memory_alloc, register_source  # noqa: F401
from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def raw_paths(p: DataParams) -> list[str]:
    """The files and folders the configured source reads (DVC deps of prepare-data)."""
    return SOURCES[p.source].raw_paths(p)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


TV_FOLDERS = {
    "fashion_mnist": "FashionMNIST",
    "mnist": "MNIST",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}


def _tv_paths(name: str) -> Callable[[DataParams], list[str]]:
    def paths(p: DataParams) -> list[str]:
        if name == "fashion_mnist" and (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
            return [str(DEBIAN_FASHION)]
        return [str(Path(getattr(p, name).root) / TV_FOLDERS[name])]

    return paths


def _torchvision(name: str) -> Callable[[DataParams, int, Alloc], Raw]:
    def load(p: DataParams, seed: int, alloc: Alloc) -> Raw:
        import torchvision.datasets as tvd

        if name == "fashion_mnist" and (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
            log.info("Fashion-MNIST from Debian's dataset-fashion-mnist (%s)", DEBIAN_FASHION)
            parts = []
            for part in ("train", "t10k"):
                x = _read_idx(DEBIAN_FASHION / f"{part}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
                y = _read_idx(DEBIAN_FASHION / f"{part}-labels-idx1-ubyte.gz", 8)
                parts.append(Part(torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))))
            return Raw(parts[0], parts[1], list(FASHION_CLASSES))
        cls = {
            "fashion_mnist": tvd.FashionMNIST,
            "mnist": tvd.MNIST,
            "cifar10": tvd.CIFAR10,
            "cifar100": tvd.CIFAR100,
        }[name]
        block, parts = getattr(p, name), []
        for train in (True, False):
            try:
                ds = cls(block.root, train=train, download=block.download)
            except RuntimeError:
                hint = "install Debian's dataset-fashion-mnist or " if name == "fashion_mnist" else ""
                raise KdpipeError(
                    f"data set {name!r} not found under {block.root!r}; {hint}set data.{name}.download: true "
                    "on a connected machine"
                ) from None
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
            parts.append(
                Part(
                    x.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
                )
            )
        return Raw(parts[0], parts[1], list(ds.classes))

    return load


TV_SIZES = {"fashion_mnist": (60000, 10000), "mnist": (60000, 10000), "cifar10": (50000, 10000)}
TV_SIZES["cifar100"] = TV_SIZES["cifar10"]  # the published splits: their sizes are fixed

for _name, _flip in (("fashion_mnist", True), ("mnist", False), ("cifar10", True), ("cifar100", True)):
    register_source(_name, flip=_flip, raw_paths=_tv_paths(_name), sizes=lambda p, n=_name: TV_SIZES[n])(
        _torchvision(_name)
    )


@register_source(
    "synthetic", flip=False, raw_paths=lambda p: [], sizes=lambda p: (p.synthetic.train, p.synthetic.test)
)
def _synthetic(p: DataParams, seed: int, alloc: Alloc) -> Raw:
    """Separable toy classes: class k is a fixed random template plus per-image noise."""
    s = p.synthetic
    g = torch.Generator().manual_seed(1234 + seed)
    templates = torch.rand(s.classes, s.channels, s.size, s.size, generator=g) * 255

    def draw(n: int) -> Part:
        y = torch.arange(n) % s.classes
        x = templates[y] * 0.6 + torch.rand(n, s.channels, s.size, s.size, generator=g) * 0.4 * 255
        return Part(x.round().clamp(0, 255).to(torch.uint8), y)

    return Raw(draw(s.train), draw(s.test), [f"class{i}" for i in range(s.classes)])


from pipeline.data import imagefolder  # noqa: E402, F401 - registers the imagefolder source
