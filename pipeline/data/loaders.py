"""Loaders yielding `(x, y, idx)`: x normalised float on the device, y labels, idx data-set indices.

`make_loader` picks one: a split up to `resident_max_mb` (uint8 MiB) is kept on the device
(`DeviceLoader`); a bigger one streams from its (memory-mapped) CPU tensor through DataLoader
workers into pinned memory (`StreamLoader`). Both draw the same permutation per (seed, epoch)
and the same augmentation per batch, so they yield identical batches. With `world_size > 1`
each rank takes its own slice of the same permutation and `batch_size` is the global size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.augment import Augment, from_data

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Loader:
    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mean: list[float],
        std: list[float],
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: bool = False,
        pad: int = 0,
        flip: bool = False,
        crop: str = "pad_crop",
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (0.75, 4 / 3),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.n = len(y)
        self.batch_size = max(1, batch_size // world_size)
        self.shuffle, self.augment = shuffle, augment
        self.aug = Augment(crop=crop, pad=pad, flip=flip, scale=tuple(scale), ratio=tuple(ratio))
        self.seed, self.rank, self.world_size, self.channels_last = seed, rank, world_size, channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = self.n
        if not self.shuffle:
            idx = torch.arange(n)
        else:
            idx = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            )
        if self.world_size > 1:
            per = n // self.world_size  # equal shares so every rank takes the same number of steps
            idx = (
                idx[self.rank * per : (self.rank + 1) * per]
                if not self.shuffle
                else idx[self.rank :: self.world_size][:per]
            )
        return idx

    def _batches(self) -> list[torch.Tensor]:
        idx = self._indices()
        return [idx[s : s + self.batch_size] for s in range(0, len(idx), self.batch_size)]

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7919 * (self.rank + 1))

    def __len__(self) -> int:
        n = self.n // self.world_size if self.world_size > 1 else self.n
        return (n + self.batch_size - 1) // self.batch_size

    def _finish(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 batch on the device -> augmented (if asked), normalised float."""
        xb = xb.float()
        if self.augment and self.aug.active:
            xb = self.aug(xb, g)
        xb = (xb - self.mean) / self.std
        return xb.contiguous(memory_format=torch.channels_last) if self.channels_last else xb


class DeviceLoader(_Loader):
    """The whole split kept on `device` as uint8; batches are gathered there."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: list[float], std: list[float], **kw) -> None:
        super().__init__(x, y, mean, std, **kw)
        self.x, self.y = x.to(self.device), y.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        g = self._generator()
        for bi in self._batches():
            bi = bi.to(self.device)
            yield self._finish(self.x[bi], g), self.y[bi], bi


class _Gather(Dataset):
    """Item i = the uint8 images and labels of batch i (rows read in file order, then put back in batch
    order)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor]) -> None:
        self.x, self.y, self.batches = x, y, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bi = self.batches[i]
        rows, back = bi.sort()  # sequential reads from the memmap
        xb = torch.empty((len(bi), *self.x.shape[1:]), dtype=torch.uint8)
        xb[back] = self.x[rows]
        return xb, self.y[bi], bi


class StreamLoader(_Loader):
    """Batches read from a CPU (memory-mapped) tensor by `workers` processes, pinned, then augmented on the
    device."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mean: list[float],
        std: list[float],
        *,
        workers: int = 4,
        prefetch: int = 4,
        **kw,
    ) -> None:
        super().__init__(x, y, mean, std, **kw)
        self.x, self.y, self.workers, self.prefetch = x, y.cpu(), workers, prefetch

    def __iter__(self) -> Iterator[Batch]:
        g = self._generator()
        pin = self.device.type == "cuda"
        dl = DataLoader(
            _Gather(self.x, self.y, self._batches()),
            batch_size=None,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=pin,
            prefetch_factor=self.prefetch if self.workers else None,
        )
        for xb, yb, bi in dl:
            xb = xb.to(self.device, non_blocking=pin)
            yield (
                self._finish(xb, g),
                yb.to(self.device, non_blocking=pin),
                bi.to(self.device, non_blocking=pin),
            )


def split_mb(data: dict, split: str) -> float:
    """Size of a split's uint8 images in MiB."""
    return data[f"{split}_x"].numel() / 2**20


def make_loader(
    data: dict,
    split: str,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    train: bool = False,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    channels_last: bool = False,
    augment: bool = True,
    resident_max_mb: float | None = None,
    workers: int | None = None,
) -> _Loader:
    """The loader for `data[split]`: shuffled and augmented (as the data asks) when `train`, else plain and in
    order.

    `resident_max_mb` and `workers` default to the values prepare-data recorded (data params).
    """
    limit = data.get("resident_max_mb", 2048.0) if resident_max_mb is None else resident_max_mb
    a = from_data(data)
    kw = {
        "batch_size": batch_size,
        "device": device,
        "shuffle": train,
        "augment": train and augment,
        "pad": a.pad,
        "flip": a.flip,
        "crop": a.crop,
        "scale": a.scale,
        "ratio": a.ratio,
        "seed": seed,
        "rank": rank,
        "world_size": world,
        "channels_last": channels_last,
    }
    x, y = data[f"{split}_x"], data[f"{split}_y"]
    if split_mb(data, split) <= limit:
        return DeviceLoader(x, y, data["mean"], data["std"], **kw)
    return StreamLoader(
        x, y, data["mean"], data["std"], workers=data.get("workers", 4) if workers is None else workers, **kw
    )
