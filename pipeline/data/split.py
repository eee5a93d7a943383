"""Seeded, class-balanced index selection (validation hold-out, subsets, a single folder's test split)."""

from __future__ import annotations

import torch

from pipeline.errors import KdpipeError


def balanced_subset(y: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Sorted positions of `n` items, as close to class-balanced as possible, chosen in a seeded random
    order."""
    perm = torch.randperm(len(y), generator=g)
    order = torch.argsort(y[perm], stable=True)  # group by class, random within class
    ys = y[perm][order]
    rank = torch.arange(len(y)) - torch.searchsorted(ys, ys)  # position within its class
    pick = perm[order][torch.argsort(rank, stable=True)][:n]  # round-robin over classes
    return pick.sort().values


def complement(n: int, picked: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[picked] = False
    return keep.nonzero().squeeze(1)


def check_size(key: str, want: int, have: int, strict_less: bool = False) -> None:
    """Refuse asking for more images than there are (one line naming the key)."""
    if want > have or (strict_less and want >= have):
        bound = f"< {have}" if strict_less else f"<= {have}"
        raise KdpipeError(
            f"{key if '.' in key else 'data.' + key}={want} but the split has {have} images; set it {bound} "
            "(0 = all)"
            if key != "val_size"
            else f"data.val_size={want} must be {bound} training images; lower it"
        )
