"""Multi-teacher aggregation rules for logit KD: how K teachers' logits become one KD term.

Each rule maps (z_s (B,C), z_t (K,B,C), y (B,), T) to a scalar already scaled by T². With K
identical teachers every rule equals single-teacher `kd_kl`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.losses.kd import kl_to_target

Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
RULES: dict[str, Rule] = {}


def register_rule(name: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return deco


@register_rule("mean_prob")
def mean_prob(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float) -> torch.Tensor:
    """T²·KL( (1/K)·Σ_k softmax(z_t,k/T) ‖ softmax(z_s/T) ): KL to the mean of teacher probabilities."""
    return kl_to_target(F.softmax(z_t / T, dim=-1).mean(0), z_s, T)


def _f32(z: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision logits under autocast are promoted; float64 stays float64)."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _kl_per_sample(z_s: torch.Tensor, z_t: torch.Tensor, T: float) -> torch.Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) per sample: z_s (B,C), z_t (K,B,C) -> (K,B)."""
    log_pt = F.log_softmax(_f32(z_t) / T, dim=-1)
    log_ps = F.log_softmax(_f32(z_s) / T, dim=-1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1) * T**2


def _weighted(z_s: torch.Tensor, z_t: torch.Tensor, w: torch.Tensor, T: float) -> torch.Tensor:
    """mean_b Σ_k w_kb · T²·KL_kb for per-sample teacher weights w (K,B) that sum to 1 over k."""
    return (w.detach() * _kl_per_sample(z_s, z_t, T)).sum(0).mean()


@register_rule("aver")
def aver(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float) -> torch.Tensor:
    """AVER: (1/K)·Σ_k T²·KL(softmax(z_t,k/T) ‖ softmax(z_s/T)), the mean of per-teacher KD losses.

    CA-MKD code (Zhang, Chen, Wang, ICASSP 2022), `ensemble_method == "AVERAGE_LOSS"`.
    """
    return _kl_per_sample(z_s, z_t, T).mean()


def ebkd_weights(z_t: torch.Tensor) -> torch.Tensor:
    """EBKD weights (K,B): w_k = (1 − H_k/Σ_j H_j)/(K − 1), H_k the entropy of softmax(z_t,k) at T = 1.

    Kwon, Na, Lee, Jeon, Yoon, "Adaptive knowledge distillation based on entropy", ICASSP 2020, as
    implemented in the CA-MKD code. Confident (low-entropy) teachers get larger weights.
    Choice: the reference divides Σ_k w_k·KL_k by K (weights then sum to (K − 1)/K); we divide by
    K − 1 so the weights sum to 1 and K identical teachers give plain KD. The raw weights are
    renormalised by their sum, which also covers Σ H = 0 (all teachers one-hot: uniform weights).
    """
    log_p = F.log_softmax(_f32(z_t.detach()), dim=-1)
    h = -(log_p.exp() * log_p).sum(-1)  # (K, B) nats
    u = 1 - h / h.sum(0, keepdim=True).clamp_min(1e-12)
    return u / u.sum(0, keepdim=True)


@register_rule("ebkd")
def ebkd(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float) -> torch.Tensor:
    """EBKD: mean_b Σ_k w_kb·T²·KL_kb with entropy-based per-sample weights (`ebkd_weights`); K = 1 is plain
    KD."""
    if z_t.shape[0] == 1:
        return _kl_per_sample(z_s, z_t, T).mean()
    return _weighted(z_s, z_t, ebkd_weights(z_t), T)


def camkd_weights(z_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CA-MKD weights (K,B): w_k = (1 − softmax_k(CE_k))/(K − 1), CE_k = CE(z_t,k, y) per sample at T = 1.

    Zhang, Chen, Wang, "Confidence-aware multi-teacher knowledge distillation", ICASSP 2022 (code:
    Rorozhl/CA-MKD). Teachers with a lower CE against the label get larger weights; Σ_k w_k = 1.
    """
    k = z_t.shape[0]
    ce = torch.stack([F.cross_entropy(_f32(z.detach()), y, reduction="none") for z in z_t])  # (K, B)
    return (1 - F.softmax(ce, dim=0)) / (k - 1)


@register_rule("camkd")
def camkd(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float) -> torch.Tensor:
    """CA-MKD (logit part): mean_b Σ_k w_kb·T²·KL_kb with confidence-aware weights (`camkd_weights`).

    Choice: the reference additionally divides by K (`sum / (bsz·K)`), which scales the term by 1/K;
    we do not, so K identical teachers give plain KD (fold 1/K into α to reproduce it). K = 1 is plain
    KD. The reference's intermediate-feature part of CA-MKD is not included here.
    """
    if z_t.shape[0] == 1:
        return _kl_per_sample(z_s, z_t, T).mean()
    return _weighted(z_s, z_t, camkd_weights(z_t, y), T)
