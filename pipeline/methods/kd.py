"""Hinton KD with one or more teachers and a named multi-teacher aggregation rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.multi_teacher import RULES
from pipeline.methods import Method, register_method


@register_method("kd")
class KD(Method):
    """L = (1 − α)·CE(z_s, y) + α·T²·KL(p_t^T ‖ p_s^T)  (Hinton, Vinyals, Dean 2015).

    With K teachers, `aggregate` names how their logits combine (pipeline.losses.multi_teacher);
    the default `mean_prob` distils from the mean of the teachers' tempered probabilities.
    Defaults T = 4, α = 0.9 follow the RepDistiller/mdistiller CIFAR-100 recipe (CE weight 0.1).
    """

    needs_teachers = True

    @dataclass(frozen=True)
    class Params:
        temperature: float = bounded(4.0, gt=0)  # softmax temperature T for teacher and student
        alpha: float = bounded(0.9, ge=0, le=1)  # weight of the KL term; CE gets 1 − α
        aggregate: str = "mean_prob"  # multi-teacher rule, see pipeline.losses.multi_teacher.RULES

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        if p.aggregate not in RULES:
            raise KdpipeError(
                f"kd.aggregate: unknown rule {p.aggregate!r}; known: {', '.join(sorted(RULES))}"
            )

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        z = self.student(x)
        zt = self.source.logits(batch)  # (K, B, C), no grad
        ce = F.cross_entropy(z, y)
        kl = RULES[self.p.aggregate](z, zt, y, self.p.temperature)
        return {"loss": (1 - self.p.alpha) * ce + self.p.alpha * kl, "logits": z, "ce": ce, "kd": kl}
