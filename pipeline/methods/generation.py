"""A generation m >= 1 of a born-again / tolerant-teacher chain, taught by generation m − 1."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.kd import kd_kl
from pipeline.losses.tsd import auto_k, top_score_difference
from pipeline.methods import Method, register_method


@register_method("generation")
class Generation(Method):
    """L = η_s·[λ·CE(z^m, y) + (1 − λ)·τ²·KL(p^τ(z^{m−1}) ‖ p^τ(z^m))] + (1 − η_s)·TSD(z^m, y, K).

    Yang, Xie, Qiao, Yuille, arXiv 1805.05551 / AAAI 2019; Furlanello et al.,
    "Born-Again Neural Networks", ICML 2018. The student has the teacher's architecture and a
    fresh initialisation (the stage builds a new one); its single teacher, generation m − 1 (the
    patriarch for m = 1), is frozen in eval mode by the knowledge source.

    With η_s = 1 (default) this is exactly `kd` with alpha = 1 − λ, temperature = τ and one teacher
    (tests/test_tolerant.py checks it). It is a method of its own because the chain has its own
    vocabulary and rules: λ weights CE as in the spec, exactly one teacher is allowed, the report
    can find generations by method name, and the spec's ablation "keep a weaker TSD on students"
    (η_s → 0.9) has a place. λ = 0.5, τ = 1 are [GUESS] (the paper's values are not available):
    τ = 1 because the tolerant teacher is soft by training, not by temperature. The v1 abstract's
    "gradually fine-tune them to fit one-hot distributions" can be followed by raising λ per
    generation in params, e.g. λ_m = min(0.9, 0.5 + 0.1·(m − 1)) [GUESS].
    """

    needs_teachers = True

    @dataclass(frozen=True)
    class Params:
        # λ: weight of CE; the KL to the previous generation gets 1 − λ [GUESS]
        lam: float = bounded(0.5, ge=0, le=1)
        temperature: float = bounded(1.0, gt=0)  # τ of both softmaxes in the KL (scaled by τ²) [GUESS]
        # η_s: weight of the CE+KL mix; TSD on the student gets 1 − η_s (1 = off); ablation
        eta: float = bounded(1.0, ge=0, le=1)
        # K of the student's TSD (eta < 1 only); 0 = from the classes, as tolerant's
        k: int = bounded(0, ge=0)

        def __post_init__(self) -> None:
            if self.k == 1:
                raise KdpipeError("generation.k must be 0 (from the class count) or >= 2, got 1")

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        if ctx.source.num_teachers != 1:
            raise KdpipeError(
                f"method 'generation' takes exactly one teacher (the previous generation), got "
                f"{ctx.source.num_teachers}; list one under teachers, or use method kd for several"
            )
        self.k = p.k or auto_k(ctx.num_classes)
        if p.eta < 1.0 and self.k > ctx.num_classes:
            raise KdpipeError(
                f"generation.k must be between 2 and the number of classes ({ctx.num_classes}), got {p.k}"
            )

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        z = self.student(x)
        zt = self.source.logits(batch)[0]  # (B, C) of the one teacher, no grad
        ce = F.cross_entropy(z, y)
        kl = kd_kl(z, zt, self.p.temperature)
        loss = self.p.lam * ce + (1.0 - self.p.lam) * kl
        out = {"logits": z, "ce": ce, "kd": kl}
        if self.p.eta < 1.0:
            out["tsd"] = top_score_difference(z, y, self.k)
            loss = self.p.eta * loss + (1.0 - self.p.eta) * out["tsd"]
        return {"loss": loss, **out}
