"""Decoupled knowledge distillation (Zhao et al., CVPR 2022) with an epoch warm-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.dkd import dkd_parts
from pipeline.methods import Method, register_method


@register_method("dkd")
class DKD(Method):
    """L = CE(z_s, y) + min(progress/W, 1)·(α·TCKD + β·NCKD)  ("Decoupled Knowledge Distillation", CVPR 2022).

    TCKD/NCKD in pipeline.losses.dkd (T²-scaled, batchmean). Defaults α = 1, β = 8, T = 4, W = 20
    epochs are mdistiller's CIFAR-100 defaults for a 240-epoch schedule (β = 2 for res56→res20 and
    res110→res32, 6 for the WRN/VGG pairs). W is in epochs: scale it with the schedule
    (20/240 of training ≈ 0.33 epoch for a 4-epoch run). Our choice: the ramp rises per step, with
    progress = e + (i + 1)/steps for the i-th training batch of 0-based epoch e (`fit` sets
    `self.progress` before each step), so a warm-up shorter than an epoch is possible; at each
    epoch's end it equals mdistiller's per-epoch `epoch / warmup` (1-based epoch). Outside training
    (no progress set, or eval mode) it is per epoch, (e + 1)/W. W = 0 turns the warm-up off.
    Several teachers (the paper has one): `teachers: mean_logits` (default, our choice) distils
    from the mean of the teachers' logits, a single target that keeps DKD's binary/non-target split
    well defined; `first` uses the first teacher only.
    """

    needs_teachers = True

    @dataclass(frozen=True)
    class Params:
        alpha: float = bounded(1.0, ge=0)  # weight α of TCKD (mdistiller DKD.ALPHA)
        beta: float = bounded(8.0, ge=0)  # weight β of NCKD (mdistiller DKD.BETA, CIFAR-100 default)
        temperature: float = bounded(4.0, gt=0)  # softmax temperature T (mdistiller DKD.T)
        # epochs over which the KD weight ramps linearly to 1 (mdistiller DKD.WARMUP); 0 = none
        warmup: float = bounded(20.0, ge=0)
        ce_weight: float = bounded(1.0, ge=0)  # weight of CE (mdistiller DKD.CE_WEIGHT)
        teachers: Literal["mean_logits", "first"] = "mean_logits"  # how several teachers become one target

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        if ctx.num_classes < 2:
            raise KdpipeError("dkd needs at least 2 classes (NCKD is over the non-target classes)")

    def ramp(self, progress: float) -> float:
        """Warm-up factor min(progress/W, 1); `progress` in epochs (e.g. e + (i + 1)/steps, or e + 1 per
        epoch)."""
        if self.p.warmup == 0:
            return 1.0
        return min(progress / self.p.warmup, 1.0)

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        z = self.student(x)
        zt = self.source.logits(batch)  # (K, B, C), no grad
        zt = zt.mean(0) if self.p.teachers == "mean_logits" else zt[0]
        tckd, nckd = dkd_parts(z, zt, y, self.p.temperature)
        ce = F.cross_entropy(z, y)
        progress = self.progress if self.training and self.progress is not None else epoch + 1.0
        loss = self.p.ce_weight * ce + self.ramp(progress) * (self.p.alpha * tckd + self.p.beta * nckd)
        return {"loss": loss, "logits": z, "ce": ce, "tckd": tckd, "nckd": nckd}
