"""Professor-model losses (Bang, Lee, Shim, "Distilling from professors: Enhancing the knowledge
distillation of teachers", Information Sciences 576, 2021).

The paper's full text was not available; these are the [GUESS] formulas of
kdpipe's own design (docs/methods.md, professor), mirroring the conditional adversarial autoencoder (CAAE) of
Zhang, Song, Qi, CVPR 2017 (L1 reconstruction + two adversarial BCE games):

    L_rec  = mean_{b,c} | p^τ(z_P) − p^τ(z_t) |            keep the teacher's inter-class structure
    L_acc  = CE(z_P, y)                                    the refined target ranks the true class first
    L_Ez   = BCE(D_z(E_P(z_t)), 1)                         latent looks like the prior U[−1,1]^d_z
    L_Gp   = BCE(D_p(p^τ(z_P), y), 1)                      refined targets look like good teacher targets
    L_prof = λ_rec·L_rec + λ_acc·L_acc + λ_z·L_Ez + λ_p·L_Gp
    L_Dz   = BCE(D_z(u ~ U),1) + BCE(D_z(E_P(z_t)),0)
    L_Dp   = BCE(D_p(p_T^correct, y),1) + BCE(D_p(p_P, y),0)

with p^τ(z) = softmax(z/τ). Discriminators output logits; BCE is `binary_cross_entropy_with_logits`
(mean over the batch). CE is at temperature 1, as the spec writes it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rec_loss(z_p: torch.Tensor, z_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_rec = mean over batch and classes of |softmax(z_P/τ) − softmax(z_t/τ)| (CAAE's L1 term)."""
    return (F.softmax(z_p / temperature, dim=1) - F.softmax(z_t / temperature, dim=1)).abs().mean()


def acc_loss(z_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_acc = CE(z_P, y) at temperature 1."""
    return F.cross_entropy(z_p, y)


def adv_gen_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator term BCE(D(fake), 1) = mean softplus(−d); used for L_Ez and L_Gp."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def adv_disc_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """BCE(D(real), 1) + BCE(D(fake), 0); a batch without real samples contributes only the fake term.

    (D_p's "real" set is the correctly classified samples of the batch, which can be empty.)
    """
    fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    if d_real.numel() == 0:
        return fake
    return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + fake


def mix_logits(z_t: torch.Tensor, z_p: torch.Tensor, weight: float, temperature: float) -> torch.Tensor:
    """Logits of the mixed target m = w·p^τ(z_t) + (1−w)·p^τ(z_P):  τ·log m  (so softmax(·/τ) = m).

    Used by the `joint` strategy. For the student s, Σ_k w_k·KL(p_k ‖ q_s) = KL(Σ_k w_k p_k ‖ q_s) + const
    (the constant does not depend on s), so KD on the mixture has exactly the gradients of the spec's
    w·KL(p_T ‖ p_S) + (1−w)·KL(p_P ‖ p_S). Computed with logsumexp so w ∈ {0, 1} stays finite.
    """
    lw = torch.tensor(
        [math.log(weight) if weight > 0 else -math.inf, math.log(1 - weight) if weight < 1 else -math.inf],
        device=z_t.device,
        dtype=torch.float32,
    )
    parts = torch.stack(
        [
            F.log_softmax(z_t.float() / temperature, dim=-1) + lw[0],
            F.log_softmax(z_p.float() / temperature, dim=-1) + lw[1],
        ]
    )
    return temperature * torch.logsumexp(parts, dim=0)
