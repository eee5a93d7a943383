"""IE-KD: inheritance and exploration knowledge distillation (Huang et al., CVPR 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.knowledge.factor import Coder, load_factor, split_indices
from pipeline.losses.at import match_spatial
from pipeline.losses.ie import exploration_loss, inheritance_loss
from pipeline.losses.multi_teacher import RULES
from pipeline.methods import Context, Method, register_method


@register_method("ie_kd")
class IEKD(Method):
    """L = L_goal + λ_inh·D₁(E_inh(f_inh), F_T) + λ_exp·L_exp(E_exp(f_exp), F_T)  (pipeline.losses.ie).

    "Revisiting Knowledge Distillation: An Inheritance and Exploration Framework", Huang et al.,
    CVPR 2021; official code aliyun/Revisiting-Knowledge-Distillation-an-Inheritance-and-Exploration-Framework
    (whose `teacher`/`student` names are swapped: here the *student* is split, as in the paper).

    - f: the student's last-stage feature, split along channels into f_inh (floor(C·split)
      channels) and f_exp (the rest), "natural" order or a fixed random permutation (buffers
      `inh_index`/`exp_index`, saved with the training state).
    - E_inh, E_exp: trainable `Coder(C_part, k)` encoders, attributes of the method: trained with
      the student, saved in last.pt, never exported. The official decoders of E_inh/E_exp are
      dead weight (only decayed) and are not built here.
    - F_T = E_T(f_T): f_T the *first* teacher's last-stage feature, E_T the frozen encoder written
      by the pretrain-factor stage, given as ctx.assets["factor"] (a path or the loaded dict; the
      distill stage passes models/knowledge/factor/<first teacher>.pt).
    - Spatial sizes: if the student factor and F_T differ, the larger is average-pooled to the
      smaller (as for AT).
    - L_goal = CE, or Hinton KD (1 − α)·CE + α·T²·KL over all teachers when kd_alpha = α > 0
      (IE-KD(KD) [GUESS]); with λ_inh = λ_exp = 0 the loss is exactly `ce`'s
      (kd_alpha 0) or `kd`'s (kd_alpha > 0).
    - λ_inh = λ_exp = 500 [GUESS]: the official config's 1 is inert for a mean-reduced
      ℓ1 of unit vectors (D₁ ≤ 2/√d ≈ 0.04); 500 is official FT's β for the identical loss.
      λ_exp = 0 gives the FT-like inheritance-only control.
    - Both λ terms ramp in linearly over the first `warmup_frac` = 10 % of training (our choice): the
      student's encoders start random, and at λ = 500 their terms would outweigh CE from the first step.
    """

    needs_teachers = True
    needs_features = True
    uses_assets = ("factor",)

    @dataclass(frozen=True)
    class Params:
        # weight of L_inh = D₁(F_inh, F_T); [GUESS] (official FT's β = 500)
        lambda_inh: float = bounded(500.0, ge=0)
        lambda_exp: float = bounded(500.0, ge=0)  # weight of L_exp; 0 = inheritance-only control; [GUESS]
        warmup_frac: float = bounded(0.1, ge=0, le=1)  # share of training over which λ terms ramp in; 0 = off
        # L_exp form: l1 = −D₁ (spec default) | cos = mean |cos| (code's ablation; ~20× larger than D₁,
        # so lower λ_exp)
        exploration: Literal["l1", "cos"] = "l1"
        # fraction of the student's last-stage channels that inherit (the paper: 50/50)
        split: float = bounded(0.5, gt=0, lt=1)
        # natural = first channels inherit | random = fixed permutation
        divide: Literal["natural", "random"] = "natural"
        divide_seed: int = bounded(0, ge=0)  # seed of the random permutation (divide: random)
        # α of Hinton KD in L_goal = (1 − α)·CE + α·T²·KL; 0 = CE only (spec), 0.9 = IE-KD(KD)
        kd_alpha: float = bounded(0.0, ge=0, le=1)
        temperature: float = bounded(4.0, gt=0)  # KD temperature T (kd_alpha > 0 only; the spec: 4)
        # multi-teacher KD rule (pipeline.losses.multi_teacher.RULES); kd_alpha > 0 only
        aggregate: str = "mean_prob"

    def __init__(self, ctx: Context, p: Params) -> None:
        super().__init__(ctx, p)
        if p.aggregate not in RULES:
            raise KdpipeError(
                f"ie_kd.aggregate: unknown rule {p.aggregate!r}; known: {', '.join(sorted(RULES))}"
            )
        src = ctx.assets.get("factor")
        if src is None or (isinstance(src, (str, Path)) and not Path(src).is_file()):
            raise KdpipeError(
                f"ie_kd needs the first teacher's factor encoder ({src or 'no path given'}); list that "
                "teacher under factor.teachers and run pretrain-factor (dvc repro)"
            )
        self.teacher_encoder, meta = load_factor(src)  # frozen, eval
        teachers = getattr(ctx.source, "teachers", None)
        if teachers is not None and int(teachers[0].stage_channels[-1]) != meta["in_channels"]:
            raise KdpipeError(
                f"factor {meta['teacher']!r} expects {meta['in_channels']} teacher channels, the first "
                f"teacher has {teachers[0].stage_channels[-1]}; re-run pretrain-factor for the student's "
                "first teacher"
            )
        inh, exp = split_indices(int(ctx.student.stage_channels[-1]), p.split, p.divide, p.divide_seed)
        self.register_buffer("inh_index", inh)
        self.register_buffer("exp_index", exp)
        self.enc_inh = Coder(len(inh), meta["channels"])
        self.enc_exp = Coder(len(exp), meta["channels"])

    def train(self, mode: bool = True) -> IEKD:
        super().train(mode)
        self.teacher_encoder.eval()  # frozen factor: its BN statistics never move
        return self

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        feats, z = self.student(x, stages=True)  # through the (DDP) student's own forward
        f = feats[-1]
        t_feats, zt = self.source.features(batch)  # no grad; zt (K, B, C)
        with torch.no_grad():
            f_t = self.teacher_encoder(t_feats[0][-1])
        f_inh = self.enc_inh(f.index_select(1, self.inh_index))
        f_exp = self.enc_exp(f.index_select(1, self.exp_index))
        inh = inheritance_loss(*match_spatial(f_inh, f_t))
        exp = exploration_loss(*match_spatial(f_exp, f_t), form=self.p.exploration)
        ce = F.cross_entropy(z, y)
        out = {"logits": z, "ce": ce, "inh": inh, "exp": exp}
        goal = ce
        if self.p.kd_alpha > 0:
            out["kd"] = RULES[self.p.aggregate](z, zt, y, self.p.temperature)
            goal = (1 - self.p.kd_alpha) * ce + self.p.kd_alpha * out["kd"]
        w = self.warm(self.p.warmup_frac, epoch)
        out["loss"] = goal + w * (self.p.lambda_inh * inh + self.p.lambda_exp * exp)
        return out
