"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

Uses the *code* form of the official implementation (channel mean of squared activations,
squared difference averaged over elements), for which the yardstick weight β = 1000 is valid;
the paper's form (channel sum, non-squared norm) differs (torchdistill documents both).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def at_map(f: torch.Tensor) -> torch.Tensor:
    """a(F) = ℓ2-normalise( flatten( mean_c F_c² ) ): (B, C, H, W) -> (B, H·W)."""
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


def match_spatial(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two maps to the smaller spatial size."""
    hs, ht = fs.shape[-2:], ft.shape[-2:]
    if hs == ht:
        return fs, ft
    size = (min(hs[0], ht[0]), min(hs[1], ht[1]))
    return F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)


def at_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """L_AT(F_s, F_t) = mean( (a(F_s) − a(F_t))² ) over batch and positions; spatial sizes matched by pooling."""
    fs, ft = match_spatial(fs, ft)
    return (at_map(fs) - at_map(ft)).pow(2).mean()
