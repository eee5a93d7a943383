"""The data-source registry: what a source returns (`Raw` of two `Part`s) and `register_source`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pipeline.data.params import DataParams

Alloc = Callable[[tuple[int, ...]], torch.Tensor]


def memory_alloc(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.uint8)


@dataclass
class Part:
    """Images x (N, C, H, W) uint8, labels y (N,), and the rows of x that belong to this part."""

    x: torch.Tensor
    y: torch.Tensor
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = torch.arange(len(self.y))


@dataclass
class Raw:
    train: Part
    test: Part
    classes: list[str]
    notes: dict[str, int] = field(default_factory=dict)  # counts for the summary (converted, skipped images)
    resized: bool = False  # the source already resized to image_size


@dataclass(frozen=True)
class Source:
    load: Callable[[DataParams, int, Alloc], Raw]
    raw_paths: Callable[[DataParams], list[str]]
    flip: bool  # default horizontal flip
    sizes: Callable[[DataParams], tuple[int, int]] | None = None  # (train, test) images, without decoding


SOURCES: dict[str, Source] = {}


def register_source(
    name: str,
    *,
    flip: bool,
    raw_paths: Callable[[DataParams], list[str]],
    sizes: Callable[[DataParams], tuple[int, int]] | None = None,
) -> Callable:
    def deco(fn: Callable[[DataParams, int, Alloc], Raw]) -> Callable:
        SOURCES[name] = Source(fn, raw_paths, flip, sizes)
        return fn

    return deco
