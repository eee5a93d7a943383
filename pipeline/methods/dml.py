"""Deep mutual learning: K peer students teach each other (Zhang, Xiang, Hospedales, Lu, CVPR 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.kd import kd_kl
from pipeline.losses.multi_teacher import RULES
from pipeline.methods import Method, register_method


@register_method("dml")
class DML(Method):
    """L = Σ_k L_k,  L_k = CE(z_k, y) + w/(K−1)·Σ_{j≠k} KL(p_j.detach() ‖ p_k) at τ = 1.

    Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018.

    The reference (paper Alg. 1, IE-KD processors/DML.py) *alternates*: update peer 1, forward
    again, update peer 2. Here all peers are updated simultaneously from one forward with one
    optimizer: every peer's target p_j is detached, so ∂L/∂θ_k is exactly ∂L_k/∂θ_k and the sum
    of the L_k is what our single loop (`fit`) can run; the only difference is that peer 2 sees
    peer 1's pre-update prediction. w = 1 is explicit (the IE-KD repo defaults it to 0 by mistake).
    Peers are separate attributes `student`, `peer1`, ... (not one ModuleList aliasing the student)
    so that `fit` wraps each in DDP and the state dict holds each weight once; `exported()` returns
    every peer as its own artifact ({"": peer 0, "_peer1": peer 1, ...}); `fit` validates peer 0.
    DML needs no teacher. With teachers and `teacher_weight` > 0, each peer also gets
    teacher_weight·T²·KL(mean teacher prob ‖ p_k) at `temperature` (our extension, off by default).
    """

    needs_teachers = False

    @dataclass(frozen=True)
    class Params:
        peers: int = bounded(2, ge=2)  # number K of peer students trained together (paper: 2 or more)
        # weight w of the mutual KL term (IE-KD resnet56-20.yaml sets 1; never rely on a 0 default)
        kl_weight: float = bounded(1.0, ge=0)
        # optional extra KD from teachers per peer; 0 = pure DML (paper)
        teacher_weight: float = bounded(0.0, ge=0)
        # temperature of the optional teacher KD term only (mutual KL is at τ = 1)
        temperature: float = bounded(4.0, gt=0)

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        if ctx.make_student is None:
            raise KdpipeError(
                "dml needs a way to build peer students (Context.make_student); run it through distill"
            )
        if p.teacher_weight > 0 and ctx.source is None:
            raise KdpipeError(
                "dml.teacher_weight > 0 needs teachers; list them under the student's 'teachers' or set it "
                "to 0"
            )
        for k in range(1, p.peers):
            setattr(self, f"peer{k}", ctx.make_student())

    @property
    def peer_names(self) -> list[str]:
        return ["student"] + [f"peer{k}" for k in range(1, self.p.peers)]

    @property
    def peers(self) -> list[nn.Module]:
        """The peer networks, peer 0 first (looked up each time, so DDP wrappers are used while training)."""
        return [getattr(self, n) for n in self.peer_names]

    def exported(self) -> dict[str, nn.Module]:
        return {("" if k == 0 else f"_peer{k}"): m for k, m in enumerate(self.peers)}

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        zs = [m(x) for m in self.peers]
        k = len(zs)
        zt = self.source.logits(batch) if self.p.teacher_weight > 0 else None
        ces, kls, kds, total = [], [], [], 0.0
        for i, z in enumerate(zs):
            ce = F.cross_entropy(z, y)
            kl = sum(kd_kl(z, zs[j].detach(), 1.0) for j in range(k) if j != i) / (k - 1)
            loss_i = ce + self.p.kl_weight * kl
            if zt is not None:
                kds.append(RULES["mean_prob"](z, zt, y, self.p.temperature))
                loss_i = loss_i + self.p.teacher_weight * kds[-1]
            ces.append(ce)
            kls.append(kl)
            total = total + loss_i
        out = {
            "loss": total,
            "logits": zs[0],
            "ce": torch.stack(ces).mean(),
            "kl": torch.stack(kls).mean(),
            "ce_peer0": ces[0],
        }
        if kds:
            out["kd"] = torch.stack(kds).mean()
        return out
