"""Attention transfer on stage features (Zagoruyko & Komodakis, ICLR 2017)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.errors import KdpipeError
from pipeline.losses.at import at_loss
from pipeline.methods import Method, register_method


@register_method("at")
class AttentionTransfer(Method):
    """L = CE(z_s, y) + β·Σ_l L_AT(F_s^l, F_t^l)  ("Paying More Attention to Attention", ICLR 2017).

    L_AT is the official code form (pipeline.losses.at): channel mean of squared activations,
    ℓ2-normalised, squared difference averaged over batch and positions; β = 1000 is the
    RepDistiller/mdistiller yardstick weight for that form. Layers: the stage outputs
    (`student(x, stages=True)`, RepDistiller's `feat[1:-1]`); maps of different spatial size are
    pooled to the smaller one. Channel counts may differ (the map averages over channels).
    Several teachers: `teacher` picks one (default the first, as single-teacher AT), or −1
    averages L_AT over all teachers (our choice; the paper has one teacher).
    """

    needs_teachers = True
    needs_features = True

    @dataclass(frozen=True)
    class Params:
        beta: float = 1000.0  # weight β of Σ_l L_AT (RepDistiller `-b 1000`, mdistiller AT.FEAT_WEIGHT)
        layers: list[int] = field(default_factory=list)  # stage indices to match (0 = first stage); empty = all stages
        teacher: int = 0  # teacher index whose attention maps are the targets; −1 = mean of L_AT over all teachers

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        k = ctx.source.num_teachers
        if not (p.teacher == -1 or 0 <= p.teacher < k):
            raise KdpipeError(f"at.teacher={p.teacher} but the student has {k} teacher(s); use 0..{k - 1} or -1 (mean)")
        if p.beta < 0:
            raise KdpipeError(f"at.beta must be >= 0, got {p.beta}")

    def _pairs(self, fs: list[torch.Tensor], ft: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = self.p.layers or list(range(len(fs)))
        if not self.p.layers and len(fs) != len(ft):
            raise KdpipeError(f"at: student has {len(fs)} stages, teacher {len(ft)}; list the stages to match in at.layers")
        if any(not 0 <= i < min(len(fs), len(ft)) for i in layers):
            raise KdpipeError(f"at.layers={layers} out of range: student has {len(fs)} stages, teacher {len(ft)}")
        return [(fs[i], ft[i]) for i in layers]

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        fs, z = self.student(x, stages=True)  # through the (possibly DDP-wrapped) student's own forward
        ft_all, _ = self.source.features(batch)  # per teacher: list of stage features, no grad
        chosen = ft_all if self.p.teacher == -1 else [ft_all[self.p.teacher]]
        at = torch.stack([sum(at_loss(a, b) for a, b in self._pairs(fs, ft)) for ft in chosen]).mean()
        ce = F.cross_entropy(z, y)
        return {"loss": ce + self.p.beta * at, "logits": z, "ce": ce, "at": at}
