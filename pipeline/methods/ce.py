"""Plain supervised training with cross-entropy: teachers and scratch students."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.methods import Method, register_method


@register_method("ce")
class CrossEntropy(Method):
    """L = CE(z, y) with optional label smoothing (Szegedy et al. 2016)."""

    @dataclass(frozen=True)
    class Params:
        label_smoothing: float = bounded(0.0, ge=0, lt=1)  # ε of label smoothing; 0 = hard labels

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        z = self.student(x)
        ce = F.cross_entropy(z, y, label_smoothing=self.p.label_smoothing)
        return {"loss": ce, "logits": z, "ce": ce}
