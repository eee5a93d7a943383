"""Knowledge sources: where a method's teacher signals come from.

`OnlineTeachers` runs frozen teachers (eval mode, no_grad) on the batch the student sees.
`CachedLogits` serves a (K, N, C) tensor written by a stage (teacher logits from infer-targets, or
professor-refined targets) by the batch's data-set index. Cached targets were computed on
un-augmented images; a stage only builds one for augmented training when the params say so.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.errors import KdpipeError


class KnowledgeSource(nn.Module):
    """Base: `logits(batch) -> (K, B, C)`; `features(batch) -> (per-teacher stage features, logits)`."""

    num_teachers: int = 0

    def logits(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def features(self, batch) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        raise KdpipeError(f"{type(self).__name__} has no stage features; use targets: online for feature-based methods")


class OnlineTeachers(KnowledgeSource):
    """Frozen teachers run on the fly; their parameters never train and BN statistics never move."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        for p in self.teachers.parameters():
            p.requires_grad_(False)
        self.num_teachers = len(teachers)
        self.eval()

    def train(self, mode: bool = True) -> "OnlineTeachers":
        return super().train(False)  # always eval

    @torch.no_grad()
    def logits(self, batch) -> torch.Tensor:
        x = batch[0]
        return torch.stack([t(x) for t in self.teachers]).float()

    @torch.no_grad()
    def features(self, batch) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        outs = [t.forward_stages(batch[0]) for t in self.teachers]
        return [f for f, _ in outs], torch.stack([z for _, z in outs]).float()


class CachedLogits(KnowledgeSource):
    """Targets looked up by data-set index in a (K, N, C) table (train split indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        if table.ndim != 3:
            raise KdpipeError(f"cached targets must have shape (K, N, C), got {tuple(table.shape)}; re-run infer-targets")
        self.register_buffer("table", table.float(), persistent=False)
        self.num_teachers = table.shape[0]

    def logits(self, batch) -> torch.Tensor:
        return self.table[:, batch[2]]
