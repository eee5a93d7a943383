"""Statistics of the report: mean ± std over seeds, paired differences with a Student-t interval,
and teacher-student agreement from test logits. Pure functions, no scipy."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Two-sided 95 % critical values t_{0.975, df} of Student's t for df = 1..30 (standard tables, 4 decimals).
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,  # df 1-10
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,  # df 11-20
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,  # df 21-30
)  # fmt: skip
Z975 = 1.959964  # the normal quantile the t quantiles approach as df grows

BETTER, SAME, WORSE = "better", "no detectable difference", "worse"


def t975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, the Cornish-Fisher series in 1/df beyond (error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (n - 1 in the denominator; None for a single value)."""

    mean: float
    std: float | None
    n: int


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Paired:
    """Mean paired difference (model − baseline) over matching seeds, its 95 % CI and the verdict."""

    delta: float
    ci_low: float | None
    ci_high: float | None
    n: int
    verdict: str


def verdict(ci_low: float | None, ci_high: float | None, n: int) -> str:
    """better / worse when the 95 % CI excludes 0 on that side, else no detectable difference."""
    if n < 2 or ci_low is None or ci_high is None:
        return f"not testable (n={n})"
    if ci_low > 0:
        return BETTER
    if ci_high < 0:
        return WORSE
    return SAME


def paired_difference(pairs: Sequence[tuple[float, float]]) -> Paired:
    """Paired t interval of `model − baseline` from (model, baseline) values of the same seeds.

    CI = mean(d) ± t_{0.975, n-1} · s(d) / √n, with s the sample standard deviation of the differences.
    """
    diffs = [a - b for a, b in pairs]
    n = len(diffs)
    if n == 0:
        return Paired(math.nan, None, None, 0, verdict(None, None, 0))
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, None, None, n, verdict(None, None, n))
    half = t975(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n, verdict(mean - half, mean + half, n))


def top1_agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Fraction of items on which teacher and student predict the same class."""
    return (teacher_logits.argmax(1) == student_logits.argmax(1)).float().mean().item()


def kl_teacher_student(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> float:
    """Mean over items of KL(p_teacher || p_student) in nats, softmax at `temperature`."""
    log_t = torch.log_softmax(teacher_logits.double() / temperature, dim=1)
    log_s = torch.log_softmax(student_logits.double() / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean().item()
