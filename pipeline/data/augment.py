"""Resizing (at prepare time) and the training augmentation (on the device, per batch).

Every random number is drawn from a CPU `torch.Generator` in a fixed order per batch and only then
moved to the device, so a run is repeatable on any device, and the in-memory and the streaming
loader (same generator, same batches) produce identical images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 from uint8 or uint16 (16-bit PNG: 0..65535 -> 0..255, rounded)."""
    if x.dtype == torch.uint8:
        return x
    return ((x.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)


def resize(x: torch.Tensor, size: int, policy: str = "shorter_center") -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to (N, C, size, size).

    shorter_center: scale so the shorter side is `size` (aspect kept), then crop the centre square;
    plain: stretch to size x size. Antialiased bilinear, rounded back to uint8.
    """
    h, w = x.shape[-2:]
    if h == w == size:
        return x
    if policy == "shorter_center":
        nh, nw = max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w)))
    else:
        nh, nw = size, size
    y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    y = y[..., top : top + size, left : left + size]
    return y.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class Augment:
    """What to draw per image: crop kind, pad-crop padding (px), flip, random-resized area and ratio
    ranges."""

    crop: str = "pad_crop"  # pad_crop | random_resized | none
    pad: int = 0
    flip: bool = False
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)

    @property
    def active(self) -> bool:
        return self.flip or self.crop == "random_resized" or (self.crop == "pad_crop" and self.pad > 0)

    def __call__(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augment a float batch (B, C, H, W) on its device with draws from the CPU generator `g`."""
        if self.crop == "random_resized":
            return self._resized_crop(xb, g)
        if self.crop == "pad_crop" and self.pad:
            xb = self._pad_crop(xb, g)
        if self.flip:
            mask = (torch.rand(len(xb), generator=g) < 0.5).to(xb.device).view(-1, 1, 1, 1)
            xb = torch.where(mask, xb.flip(3), xb)
        return xb

    def _pad_crop(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = xb.shape
        p, dev = self.pad, xb.device
        shifts = torch.randint(0, 2 * p + 1, (2, b), generator=g).to(dev)
        padded = F.pad(xb, (p, p, p, p))
        rows = (shifts[0][:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (shifts[1][:, None] + torch.arange(w, device=dev))[:, None, :]
        return padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)

    def _resized_crop(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Per-image crop of area `scale` and aspect `ratio` at a random place, resized back to H x W.

        One affine grid per image (normalised coordinates, [-1, 1]): the crop's half-width and half-height
        are its side fractions, clamped to the whole image; a flip negates the x scale.
        """
        b = len(xb)
        area = torch.empty(b).uniform_(*self.scale, generator=g)
        log_r = torch.empty(b).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
        fw = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop width / image width
        fh = (area / log_r.exp()).sqrt().clamp(max=1.0)
        u = torch.rand(2, b, generator=g)
        sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = fw * sign, (2 * u[0] - 1) * (1 - fw)
        theta[:, 1, 1], theta[:, 1, 2] = fh, (2 * u[1] - 1) * (1 - fh)
        grid = F.affine_grid(theta.to(xb.device, xb.dtype), list(xb.shape), align_corners=False)
        return F.grid_sample(xb, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augments_data(data: dict) -> bool:
    """Whether a training loader on this prepared data changes the images (cached targets are then
    inexact)."""
    return from_data(data).active


def from_data(data: dict) -> Augment:
    """The augmentation a prepared data set asks for (keys written by prepare)."""
    return Augment(
        crop=data.get("crop", "pad_crop"),
        pad=int(data.get("pad", 0)),
        flip=bool(data.get("flip", False)),
        scale=tuple(data.get("scale", (0.35, 1.0))),
        ratio=tuple(data.get("ratio", (0.75, 4 / 3))),
    )
