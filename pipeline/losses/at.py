"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

Uses the *code* form of the official implementation (channel mean of squared activations,
squared difference averaged over elements), for which the yardstick weight β = 1000 is valid;
the paper's form (channel sum, non-squared norm) differs (torchdistill documents both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.errors import KdpipeError


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
    """L_AT(F_s, F_t) = mean( (a(F_s) − a(F_t))² ) over batch and positions; sizes matched by pooling."""
    fs, ft = match_spatial(fs, ft)
    return (at_map(fs) - at_map(ft)).pow(2).mean()


def stage_pairs(n_s: int, n_t: int, pairs: list[list[int]], where: str) -> list[tuple[int, int]]:
    """Resolve [student_stage, teacher_stage] pairs (negative = from the end) to non-negative indices.

    Empty `pairs`: the last min(n_s, n_t) stages of both, aligned from the end (stage −1 with −1, ...),
    so nets of different depth pair their deepest stages. Out-of-range pairs raise naming `where`.
    """
    if not pairs:
        m = min(n_s, n_t)
        return [(n_s - m + i, n_t - m + i) for i in range(m)]
    out = []
    for p in pairs:
        if len(p) != 2 or not (-n_s <= p[0] < n_s and -n_t <= p[1] < n_t):
            raise KdpipeError(
                f"{where}: pair {list(p)} is not [student_stage, teacher_stage] within the student's {n_s} "
                f"and the teacher's {n_t} stages; use indices 0..n-1 or negative from the end"
            )
        out.append((p[0] % n_s, p[1] % n_t))
    return out
