"""Multi-teacher aggregation rules for logit KD: how K teachers' logits become one KD term.

Each rule maps (z_s (B,C), z_t (K,B,C), y (B,), T) to a scalar already scaled by T². With K
identical teachers every rule equals single-teacher `kd_kl`.
"""
from __future__ import annotations

from typing import Callable

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
