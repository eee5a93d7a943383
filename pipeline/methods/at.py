"""Attention transfer on stage features (Zagoruyko & Komodakis, ICLR 2017)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.at import at_loss, stage_pairs
from pipeline.methods import Method, register_method


@register_method("at")
class AttentionTransfer(Method):
    """L = CE(z_s, y) + β·Σ_l L_AT(F_s^l, F_t^l)  ("Paying More Attention to Attention", ICLR 2017).

    L_AT is the official code form (pipeline.losses.at): channel mean of squared activations,
    ℓ2-normalised, squared difference averaged over batch and positions; β = 1000 is the
    RepDistiller/mdistiller yardstick weight for that form. Layers: the stage outputs
    (`student(x, stages=True)`, RepDistiller's `feat[1:-1]`), paired by `pairs` ([student, teacher]
    stage indices; default the last min(n_s, n_t) stages aligned from the end, so any two registry
    archs pair up) or by `layers` (one index into both lists, the yardstick form). Maps of different
    spatial size are pooled to the smaller one (any ratio); channel counts may differ (the map
    averages over channels).
    Several teachers: `teacher` picks one (default the first, as single-teacher AT), or −1
    averages L_AT over all teachers (our choice; the paper has one teacher).
    Warm-up (our choice): β ramps in linearly over the first `warmup_frac` = 10 % of training. On a random
    student β·L_AT at β = 1000 has about 12× the gradient of CE, so from the first step it would steer the
    student by the teacher's attention alone; after the ramp it is the yardstick's β.
    """

    needs_teachers = True
    needs_features = True

    @dataclass(frozen=True)
    class Params:
        beta: float = 1000.0  # weight β of Σ_l L_AT (RepDistiller `-b 1000`, mdistiller AT.FEAT_WEIGHT)
        # fraction of training over which β ramps in from 0; 0 = off
        warmup_frac: float = bounded(0.1, ge=0, le=1)
        # stage indices used in both nets (0 = first); empty: see pairs
        layers: list[int] = field(default_factory=list)
        # [student_stage, teacher_stage]; empty = aligned from the end
        pairs: list[list[int]] = field(default_factory=list)
        # teacher index whose attention maps are the targets; −1 = mean of L_AT over all teachers
        teacher: int = 0

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        k = ctx.source.num_teachers
        if not (p.teacher == -1 or 0 <= p.teacher < k):
            raise KdpipeError(
                f"at.teacher={p.teacher} but the student has {k} teacher(s); use 0..{k - 1} or -1 (mean)"
            )
        if p.beta < 0:
            raise KdpipeError(f"at.beta must be >= 0, got {p.beta}")
        if p.layers and p.pairs:
            raise KdpipeError(
                "at.layers and at.pairs both set; keep one (pairs = [student_stage, teacher_stage])"
            )
        n_s = len(getattr(ctx.student, "stage_channels", ()))
        teachers = list(getattr(ctx.source, "teachers", []))
        for net in teachers if p.teacher == -1 else teachers[p.teacher : p.teacher + 1]:
            if n_s and hasattr(net, "stage_channels"):  # check each pairing now, not at the first step
                self._index_pairs(n_s, len(net.stage_channels))

    def _index_pairs(self, n_s: int, n_t: int) -> list[tuple[int, int]]:
        if self.p.layers:
            if any(not -min(n_s, n_t) <= i < min(n_s, n_t) for i in self.p.layers):
                raise KdpipeError(
                    f"at.layers={self.p.layers} out of range: student has {n_s} stages, teacher {n_t}; "
                    "use at.pairs to pair stages of nets with different depths"
                )
            return [(i % n_s, i % n_t) for i in self.p.layers]
        return stage_pairs(n_s, n_t, self.p.pairs, "at.pairs")

    def _pairs(
        self, fs: list[torch.Tensor], ft: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(fs[i], ft[j]) for i, j in self._index_pairs(len(fs), len(ft))]

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        fs, z = self.student(x, stages=True)  # through the (possibly DDP-wrapped) student's own forward
        ft_all, _ = self.source.features(batch)  # per teacher: list of stage features, no grad
        chosen = ft_all if self.p.teacher == -1 else [ft_all[self.p.teacher]]
        at = torch.stack([sum(at_loss(a, b) for a, b in self._pairs(fs, ft)) for ft in chosen]).mean()
        ce = F.cross_entropy(z, y)
        beta = self.warm(self.p.warmup_frac, epoch) * self.p.beta
        return {"loss": ce + beta * at, "logits": z, "ce": ce, "at": at}
