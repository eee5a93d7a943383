"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR
2022).

KD's KL splits into a target-class part and a non-target-class part, re-weighted separately:

    TCKD = T² · KL( [p_t,gt, 1 − p_t,gt] ‖ [p_s,gt, 1 − p_s,gt] )        binary, from p = softmax(z/T)
    NCKD = T² · KL( softmax(z_t,¬gt / T) ‖ softmax(z_s,¬gt / T) )          over the C − 1 non-target classes
    L_DKD = α·TCKD + β·NCKD

Reductions (explicit): sum over classes, mean over the batch ("batchmean"), times T², as in
mdistiller's `dkd_loss` (`kl_div(..., size_average=False) · T² / B`).

Choices where the reference is loose:
- The target logit is *removed* from the NCKD softmaxes (exact); mdistiller subtracts 1000 from it,
  which equals removal up to a term of order e^−1000.
- log(1 − p_gt) is computed as logsumexp of the non-target log-probabilities rather than
  log(sum of probabilities), so it stays finite when p_gt → 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _split(z: torch.Tensor, y: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log [p_gt, 1 − p_gt] (B, 2), non-target logits / T (B, C − 1)) for logits z (B, C) and labels y."""
    zt = z.to(torch.promote_types(z.dtype, torch.float32)) / T  # fp16/bf16 -> fp32; fp64 stays fp64
    gt = F.one_hot(y, zt.shape[1]).bool()
    logp = F.log_softmax(zt, dim=1)
    log_gt = logp.gather(1, y[:, None])
    log_other = logp.masked_fill(gt, float("-inf")).logsumexp(dim=1, keepdim=True)
    rest = zt[~gt].view(zt.shape[0], zt.shape[1] - 1)  # drop the target column, keep class order
    return torch.cat([log_gt, log_other], dim=1), rest


def _kl_from_logs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_c p_c (log p_c − log q_c) per row, with 0·log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=1)


def dkd_parts(
    z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T²-scaled and batch-averaged; z_s, z_t (B, C) logits, y (B,) labels, C ≥ 2."""
    bin_s, rest_s = _split(z_s, y, temperature)
    bin_t, rest_t = _split(z_t.detach(), y, temperature)
    t2 = temperature**2
    tckd = _kl_from_logs(bin_t, bin_s).mean() * t2
    nckd = _kl_from_logs(F.log_softmax(rest_t, dim=1), F.log_softmax(rest_s, dim=1)).mean() * t2
    return tckd, nckd


def dkd_loss(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    y: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> torch.Tensor:
    """L_DKD = α·TCKD + β·NCKD (without CE and without the warm-up factor, which the method applies)."""
    tckd, nckd = dkd_parts(z_s, z_t, y, temperature)
    return alpha * tckd + beta * nckd
