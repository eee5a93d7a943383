"""Inheritance and exploration losses (IE-KD).

Huang, Shen, Xing, Liu, Tian, Li, Deng, Huang, Hua, "Revisiting Knowledge Distillation: An
Inheritance and Exploration Framework", CVPR 2021 (arXiv 2107.00181). The distance is Factor
Transfer's (Kim, Park, Kwak, NeurIPS 2018): factors are flattened per sample, ℓ2-normalised and
compared with a mean absolute difference.

    φ(F)        = F.flatten(1) / ‖F.flatten(1)‖₂                      (per sample)
    D₁(A, B)    = (1 / (B·d)) Σ_{b,i} | φ(A)_{b,i} − φ(B)_{b,i} |     (mean over batch × elements)
    L_inh       = D₁(F_inh, F_T)                                       (make similar)
    L_exp       = − D₁(F_exp, F_T)                                     (form "l1", default: make dissimilar)
                  or (1/B) Σ_b | cos(φ(F_exp)_b, φ(F_T)_b) |          (form "cos": push towards orthogonal)
    L_rec       = (1 / numel) Σ | f − Dec(Enc(f)) |                    (auto-encoder reconstruction)
    L           = L_goal + λ_inh·L_inh + λ_exp·L_exp

Choices where the paper and its code differ or are silent (spec §4.3, §4.8):
- L_rec is the ℓ1 mean as in the official code and official FT, not the paper's squared ℓ2.
- The exploration sign lives inside L_exp (so λ_exp > 0); "l1" mirrors L_inh and is the default,
  "cos" is the code's other form (an ablation). Both are bounded: D₁ ≤ 2/√d, |cos| ≤ 1.
- φ is computed in float32 whatever the autocast dtype, since d ≈ 2048 elements of size ~1/√d
  lose most of their precision in bf16.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

ExplorationForm = Literal["l1", "cos"]


def phi(f: torch.Tensor) -> torch.Tensor:
    """φ(F) = F.flatten(1) / ‖F.flatten(1)‖₂: (B, ...) -> (B, d), unit ℓ2 norm per sample (float32)."""
    return F.normalize(f.float().flatten(1), p=2, dim=1)


def d1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D₁(A, B) = mean over batch × elements of |φ(A) − φ(B)| (FT's / IE-KD's factor distance)."""
    return (phi(a) - phi(b)).abs().mean()


def inheritance_loss(f_inh: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """L_inh = D₁(F_inh, F_T): the inheritance factor is pulled towards the teacher factor."""
    return d1(f_inh, f_t)


def exploration_loss(f_exp: torch.Tensor, f_t: torch.Tensor, form: ExplorationForm = "l1") -> torch.Tensor:
    """L_exp (to be minimised with λ_exp > 0): "l1" = −D₁(F_exp, F_T); "cos" = mean_b |cos(φ(F_exp)_b,
    φ(F_T)_b)|."""
    if form == "l1":
        return -d1(f_exp, f_t)
    if form == "cos":
        return (phi(f_exp) * phi(f_t)).sum(dim=1).abs().mean()  # φ rows have unit norm: dot = cosine
    raise ValueError(f"unknown exploration form {form!r}; use 'l1' or 'cos'")


def reconstruction_l1(f: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """L_rec = mean |f − rec| over all elements (official code's RecLoss(norm=1), not the paper's ℓ2²)."""
    return (f.float() - rec.float()).abs().mean()
