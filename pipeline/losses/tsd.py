"""Top-score difference (TSD): the tolerant teacher's extra loss term.

Yang, Xie, Qiao, Yuille, "Knowledge Distillation in Generations: More Tolerant Teachers Educate
Better Students", arXiv 1805.05551 (2018); AAAI 2019 as "Training Deep Neural Networks in
Generations: A More Tolerant Teacher Educates Better Students". The full text was not available;
the formula below is reconstructed from the abstracts and a third-party reimplementation
(methods.md §2.2, tags [ABS]/[CODE]/[MEM]/[GUESS]):

    p        = softmax(z)                                   # τ = 1
    a1       = y  (the ground truth)                        # or the top-1 prediction, see `primary`
    a2..aK   = the K−1 highest-probability classes other than a1
    TSD(x)   = p_{a1}(x) − (1/(K−1)) · Σ_{k=2..K} p_{ak}(x)
    loss     = mean over the batch of TSD(x)                # MINIMISED: narrows the gap

Minimising it pushes the primary probability down and the K−1 runner-ups up, so a few secondary
classes "emerge" next to the primary one; the CE term the method adds keeps the primary on top.
Gradients flow through all K probabilities; the top-k *indices* are selected, not differentiated.

Choices where the public material is silent (each is an argument, default first):
- `primary="gt"`: a1 is the ground truth, per the v1 abstract ("primary class (the ground-truth)")
  [ABS]; "top1" uses the predicted class as the reimplementation does [CODE]. They coincide on
  correctly classified samples.
- `divisor="k_minus_1"`: a true mean of the K−1 secondaries [GUESS]; "k" divides their sum by K as
  the reimplementation does [CODE].
- Probabilities at τ = 1, as in the reimplementation [CODE]: TSD then lies in [−1, 1], whereas a
  gap of logits is unbounded and would fight CE without limit. Not a parameter for that reason.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from pipeline.errors import KdpipeError


def top_score_difference(
    z: torch.Tensor,
    y: torch.Tensor,
    k: int,
    primary: Literal["gt", "top1"] = "gt",
    divisor: Literal["k_minus_1", "k"] = "k_minus_1",
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """TSD of logits `z` (B, C) with labels `y` (B,): p_a1 − mean of the K−1 best other probabilities.

    Returns the batch mean (a scalar to minimise), or the per-sample values with reduction="none".
    Computed in float32 so it is safe under autocast.
    """
    c = z.shape[1]
    if not 2 <= k <= c:
        raise KdpipeError(
            f"tsd: K must be between 2 and the number of classes ({c}), got {k}; fix the method's k"
        )
    if primary not in ("gt", "top1") or divisor not in ("k_minus_1", "k"):
        raise KdpipeError(
            f"tsd: primary must be gt|top1 and divisor k_minus_1|k, got {primary!r}, {divisor!r}"
        )
    p = z.float().softmax(dim=1)
    a1 = y if primary == "gt" else p.argmax(dim=1)
    p1 = p.gather(1, a1[:, None]).squeeze(1)
    # probabilities are >= 0, so −1 at a1 keeps it out of the top K−1 of the others
    others = p.scatter(1, a1[:, None], -1.0)
    secondary = others.topk(k - 1, dim=1).values.sum(dim=1) / (k - 1 if divisor == "k_minus_1" else k)
    gap = p1 - secondary
    return gap.mean() if reduction == "mean" else gap


def auto_k(num_classes: int) -> int:
    """K = max(2, round(√C / 2)): 5 at 100 classes (the paper's CIFAR-100 value), 2 at 10, 16 at 1000."""
    return max(2, round(math.sqrt(num_classes) / 2))
