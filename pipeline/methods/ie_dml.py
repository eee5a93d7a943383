"""IE-DML: deep mutual learning with inheritance and exploration (Huang et al., CVPR 2021, DML extension)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.knowledge.factor import AutoEncoder, Coder, split_indices
from pipeline.losses.at import match_spatial
from pipeline.losses.ie import exploration_loss, inheritance_loss, reconstruction_l1
from pipeline.losses.kd import kd_kl
from pipeline.methods import Context, Method, register_method


@register_method("ie_dml")
class IEDML(Method):
    """Two networks A (the student) and B (its peer), each taught by the other (the IE-DML extension).

        L_A = CE(z_A, y) + w·KL(p_B ‖ p_A) + λ_inh·D₁(E_inh^A(f_A,inh), F_B)
              + λ_exp·L_exp(E_exp^A(f_A,exp), F_B)
        F_B = E^B(f_B), detached; L_B symmetrically; L = L_A + L_B + λ_rec·(L_rec^A + L_rec^B)

    DML: Zhang, Xiang, Hospedales, Lu, CVPR 2018; IE: Huang et al., CVPR 2021 (pipeline.losses.ie).
    - KL at τ = 1, w = 1 set explicitly (the reference's `kl_loss_weight` defaults to 0).
    - Each network has an auto-encoder E/Dec on its *full* last-stage feature (or on its
      inheritance half, `factor_input: inh` [GUESS]), trained on the fly with the ℓ1
      reconstruction loss on the *detached* feature: it describes the network without shaping it.
    - Simultaneous update: the reference alternates (update A, re-forward, update B). Our loop
      does one optimizer step per batch, so both networks step together; every cross term
      (p_other, F_other) is detached, so each network's gradient is its own L_A or L_B alone.
      The one difference: B is pushed by A's pre-step outputs, not by A's updated ones.
    - Both networks use the same split (channel indices saved as buffers); A is exported as the
      student (""), B as "<name>_peer1" (as `dml`). Encoders and auto-encoders are never exported.
    - Both λ terms ramp in linearly over the first `warmup_frac` = 25 % of training (our choice): each
      network inherits from and explores away from a factor that starts random and is learned on the fly,
      so at λ = 500 from the first step the networks would chase noise; the ℓ1 reconstruction has a
      quarter of the run to make the factors mean something.
    """

    @dataclass(frozen=True)
    class Params:
        # w of each network's KL(p_other ‖ p_self) at τ = 1 (DML; the spec: set 1 explicitly)
        dml_weight: float = bounded(1.0, ge=0)
        # weight of L_inh against the other network's factor; [GUESS]
        lambda_inh: float = bounded(500.0, ge=0)
        # weight of L_exp against the other network's factor; [GUESS]
        lambda_exp: float = bounded(500.0, ge=0)
        # share of training over which λ terms ramp in; 0 = off
        warmup_frac: float = bounded(0.25, ge=0, le=1)
        # L_exp form: l1 = −D₁ | cos = mean |cos| (~20× larger than D₁, so lower λ_exp)
        exploration: Literal["l1", "cos"] = "l1"
        split: float = bounded(0.5, gt=0, lt=1)  # fraction of last-stage channels that inherit (spec: 50/50)
        divide: Literal["natural", "random"] = "natural"  # channel order of the split
        divide_seed: int = bounded(0, ge=0)  # seed of the random permutation (divide: random)
        factor_channels: int = bounded(32, ge=1)  # channels k of every factor
        # what each network's factor encodes: full feature (spec) | inheritance half [GUESS]
        factor_input: Literal["full", "inh"] = "full"
        # weight of the ℓ1 reconstruction loss of the on-the-fly auto-encoders [GUESS]
        rec_weight: float = bounded(1.0, ge=0)

    def __init__(self, ctx: Context, p: Params) -> None:
        super().__init__(ctx, p)
        if ctx.make_student is None:
            raise KdpipeError("ie_dml needs a second network; the stage must give Context.make_student")
        self.peer = ctx.make_student()
        c = int(ctx.student.stage_channels[-1])
        if int(self.peer.stage_channels[-1]) != c:
            raise KdpipeError(
                "ie_dml: make_student built a peer with other last-stage channels; both networks must share "
                "the arch"
            )
        inh, exp = split_indices(c, p.split, p.divide, p.divide_seed)
        self.register_buffer("inh_index", inh)
        self.register_buffer("exp_index", exp)
        k, c_ae = p.factor_channels, c if p.factor_input == "full" else len(inh)
        # direct attributes (no ModuleDict) so that fit's DDP wraps each one and calls its forward
        self.inh_a, self.exp_a, self.ae_a = Coder(len(inh), k), Coder(len(exp), k), AutoEncoder(c_ae, k)
        self.inh_b, self.exp_b, self.ae_b = Coder(len(inh), k), Coder(len(exp), k), AutoEncoder(c_ae, k)

    def exported(self) -> dict[str, nn.Module]:
        return {
            "": self.student,
            "_peer1": self.peer,
        }  # same names as `dml` (models/students/<name>_peer1.pt)

    def _side(self, f, enc_inh: nn.Module, enc_exp: nn.Module, ae: nn.Module):
        """(F_inh, F_exp, own factor detached, L_rec) of one network's last-stage feature f."""
        src = f.detach() if self.p.factor_input == "full" else f.detach().index_select(1, self.inh_index)
        factor, rec = ae(src)
        return (
            enc_inh(f.index_select(1, self.inh_index)),
            enc_exp(f.index_select(1, self.exp_index)),
            factor.detach(),
            reconstruction_l1(src, rec),
        )

    def _ie(self, f_inh, f_exp, f_other) -> tuple:
        return (
            inheritance_loss(*match_spatial(f_inh, f_other)),
            exploration_loss(*match_spatial(f_exp, f_other), form=self.p.exploration),
        )

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        (fa, za), (fb, zb) = self.student(x, stages=True), self.peer(x, stages=True)
        ia, ea, ta, rec_a = self._side(fa[-1], self.inh_a, self.exp_a, self.ae_a)
        ib, eb, tb, rec_b = self._side(fb[-1], self.inh_b, self.exp_b, self.ae_b)
        inh_a, exp_a = self._ie(ia, ea, tb)  # A against B's factor
        inh_b, exp_b = self._ie(ib, eb, ta)  # B against A's factor
        ce_a, ce_b = F.cross_entropy(za, y), F.cross_entropy(zb, y)
        kl_a, kl_b = kd_kl(za, zb.detach(), 1.0), kd_kl(zb, za.detach(), 1.0)  # KL(p_B ‖ p_A), KL(p_A ‖ p_B)
        p = self.p
        w = self.warm(p.warmup_frac, epoch)
        loss_a = ce_a + p.dml_weight * kl_a + w * (p.lambda_inh * inh_a + p.lambda_exp * exp_a)
        loss_b = ce_b + p.dml_weight * kl_b + w * (p.lambda_inh * inh_b + p.lambda_exp * exp_b)
        rec = rec_a + rec_b
        acc_peer = (zb.detach().argmax(1) == y).float().mean()
        return {
            "loss": loss_a + loss_b + p.rec_weight * rec,
            "logits": za,
            "ce": ce_a,
            "ce_peer": ce_b,
            "kl": kl_a,
            "kl_peer": kl_b,
            "inh": inh_a,
            "inh_peer": inh_b,
            "exp": exp_a,
            "exp_peer": exp_b,
            "rec": rec,
            "acc_peer": acc_peer,
        }
