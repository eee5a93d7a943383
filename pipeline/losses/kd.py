"""Logit distillation losses (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to_target(p_target: torch.Tensor, z_student: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(p_target ‖ softmax(z_s/T)), batchmean, for a given target distribution.

    `p_target` is already a probability vector (e.g. a teacher's softmax at temperature T).
    The T² factor keeps gradient magnitudes independent of T (Hinton et al. 2015, §2).
    Uses log-probabilities for the student (the KLDivLoss input), never probabilities.
    """
    log_ps = F.log_softmax(z_student / temperature, dim=1)
    # xlogy makes 0·log 0 = 0 for targets with exact zeros
    kl = (torch.special.xlogy(p_target, p_target) - p_target * log_ps).sum(dim=1)
    return kl.mean() * temperature**2


def kd_kl(z_student: torch.Tensor, z_teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), averaged over the batch ("batchmean")."""
    return kl_to_target(F.softmax(z_teacher / temperature, dim=1), z_student, temperature)


def kd_loss(
    z_student: torch.Tensor, z_teacher: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton KD: (1 − α)·CE(z_s, y) + α·T²·KL(p_t^T ‖ p_s^T)."""
    return (1 - alpha) * F.cross_entropy(z_student, y) + alpha * kd_kl(z_student, z_teacher, temperature)
