"""GPAC losses: adaptive multi-teacher KL with a corrector, and the piecewise-by-epoch β(e).

"Multi-teacher knowledge distillation based on joint Guidance of Probe and Adaptive Corrector",
Neural Networks 164:345–356 (2023), DOI 10.1016/j.neunet.2023.04.015.

Only the abstract is available. Every formula below is a [GUESS] traced to an abstract clause
(docs/methods.md, GPAC): "instructional weights" from each teacher's KL to the student that
"reduce the student's difficulty", a corrector that pulls each teacher's target toward "the student's
predicted direction", and "a piecewise function of the epoch" scaling the spatial-attention loss.
Notation: p^τ(z) = softmax(z/τ); KL(p‖q) = Σ_c p_c (log p_c − log q_c).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def per_sample_kl(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row over the last dim, from probabilities p and log-probabilities log q (xlogy: 0·log 0 =
    0)."""
    return (torch.special.xlogy(p, p) - p * log_q).sum(-1)


def teacher_kl(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL_k = KL(p^τ(z_{T_k}) ‖ p^τ(z_s)) per teacher and sample, detached: (K, B, C), (B, C) -> (K, B)."""
    with torch.no_grad():
        return per_sample_kl(
            F.softmax(z_t.float() / temperature, -1), F.log_softmax(z_s.float() / temperature, -1)[None]
        )


def instruction_weights(kl: torch.Tensor, t_w: float) -> torch.Tensor:
    """w_k = softmax_k(−KL_k / t_w) per sample: teachers closer to the student weigh more. (K, B) -> (K, B),
    Σ_k w_k = 1."""
    return F.softmax(-kl / t_w, dim=0)


def corrector_rho(kl: torch.Tensor, rho_max: float) -> torch.Tensor:
    """ρ_k = ρ_max · KL_k / max_j KL_j per sample (0 where every KL is 0): the farthest teacher is corrected
    most."""
    return rho_max * kl / kl.amax(0, keepdim=True).clamp_min(1e-12)


def gpac_kl(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    temperature: float,
    t_w: float = 1.0,
    rho_max: float = 0.2,
    use_weights: bool = True,
    use_corrector: bool = True,
) -> torch.Tensor:
    """L_MT = τ² · mean_batch Σ_k w_k · KL(q_k ‖ p^τ(z_s)), z_s (B, C), z_t (K, B, C).

    q_k = normalize((1 − ρ_k)·p^τ(z_{T_k}) + ρ_k·p^τ(z_s).detach()); w_k and ρ_k come from the detached
    KL_k (see `instruction_weights`, `corrector_rho`), so gradients flow only through log p^τ(z_s).
    `use_weights=False` gives uniform w_k = 1/K; `use_corrector=False` gives ρ_k = 0 (q_k = teacher).
    With K identical teachers and the corrector off this equals single-teacher `kd_kl`; with the
    corrector on every ρ_k = ρ_max, so the target is the teacher mixed with ρ_max of the student.
    """
    T = temperature
    kl = teacher_kl(z_s, z_t, T)  # (K, B)
    w = instruction_weights(kl, t_w) if use_weights else torch.full_like(kl, 1.0 / kl.shape[0])
    p_t = F.softmax(z_t.detach().float() / T, -1)  # targets: no gradient into the teachers
    log_ps = F.log_softmax(z_s.float() / T, -1)
    if use_corrector:
        rho = corrector_rho(kl, rho_max)[..., None]  # (K, B, 1)
        q = (1 - rho) * p_t + rho * log_ps.detach().exp()[None]
        q = q / q.sum(-1, keepdim=True)  # a convex mix already sums to 1; renormalise against rounding
    else:
        q = p_t
    return (w * per_sample_kl(q, log_ps[None])).sum(0).mean() * T**2


def beta_at(epoch: int, epochs: int, levels: Sequence[float], breakpoints: Sequence[float]) -> float:
    """β(e) = levels[i] on the i-th interval of [0, E) cut at e_j = round(breakpoints[j]·E) (fractions of E
    epochs).

    Three levels with breakpoints (150/240, 210/240) give the default for the 240-epoch recipe:
    β1 for e < 150, β2 for 150 ≤ e < 210, β3 for e ≥ 210 (e is the 0-based epoch). Fractions make the
    schedule scale with the number of epochs; rounding half up to whole epochs keeps every level in
    short runs (6 epochs: cuts at 4 and 5). [GUESS]: levels and breakpoints are not in the abstract.
    """
    i = sum(1 for b in breakpoints if epoch >= math.floor(b * epochs + 0.5))
    return float(levels[i])
