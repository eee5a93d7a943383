"""pipeline.stats against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline import stats


def test_summary_mean_and_sample_std():
    # values 0.80, 0.82, 0.84: mean 0.82; deviations -0.02, 0, 0.02; s = sqrt((4e-4 + 0 + 4e-4) / 2) = 0.02
    s = stats.summarize([0.80, 0.82, 0.84])
    assert s.n == 3 and s.mean == pytest.approx(0.82) and s.std == pytest.approx(0.02)
    one = stats.summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and one.std is None


def test_t_quantiles_table_and_series():
    assert stats.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t975(1) == pytest.approx(12.706, abs=1e-3)
    # beyond the table the series continues smoothly: t_{0.975,30} = 2.0423 > t_{0.975,31} = 2.0395 > z = 1.96
    assert stats.t975(31) == pytest.approx(2.0395, abs=1e-4)
    assert stats.t975(120) == pytest.approx(1.9799, abs=1e-4)
    assert stats.t975(10**6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        stats.t975(0)


def test_paired_difference_three_seeds():
    # model 0.83, 0.85, 0.87 vs baseline 0.82, 0.83, 0.84 -> differences d = 0.01, 0.02, 0.03
    # mean(d) = 0.02; s(d) = sqrt((0.01² + 0 + 0.01²) / 2) = 0.01; se = 0.01 / √3 = 0.0057735
    # half-width = t_{0.975,2} · se = 4.3027 · 0.0057735 = 0.0248417 -> CI [-0.0048417, 0.0448417] contains 0
    p = stats.paired_difference([(0.83, 0.82), (0.85, 0.83), (0.87, 0.84)])
    assert p.n == 3 and p.delta == pytest.approx(0.02)
    assert p.ci_low == pytest.approx(0.02 - 0.0248417, abs=1e-6)
    assert p.ci_high == pytest.approx(0.02 + 0.0248417, abs=1e-6)
    assert p.verdict == "no detectable difference"


def test_paired_verdicts_by_side_of_zero():
    # d = 0.03, 0.04, 0.05: mean 0.04, s 0.01, half-width 0.0248 -> CI [0.0152, 0.0648] above 0
    assert stats.paired_difference([(0.88, 0.85), (0.89, 0.85), (0.90, 0.85)]).verdict == "better"
    # the same differences with the sign flipped -> CI [-0.0648, -0.0152] below 0
    assert stats.paired_difference([(0.85, 0.88), (0.85, 0.89), (0.85, 0.90)]).verdict == "worse"
    one = stats.paired_difference([(0.86, 0.85)])
    assert one.verdict == "not testable (n=1)" and one.delta == pytest.approx(0.01) and one.ci_low is None
    assert stats.paired_difference([]).verdict == "not testable (n=0)" and math.isnan(
        stats.paired_difference([]).delta
    )


def test_agreement_and_kl_by_hand():
    # argmax teacher 0, 1, 1, 0; student 0, 1, 0, 0 -> 3 of 4 agree
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [5.0, 0.0]])
    assert stats.top1_agreement(t, s) == pytest.approx(0.75)
    # teacher logits (0, 0) -> p = (1/2, 1/2); student (ln 3, 0) -> q = (3/4, 1/4)
    # KL(p||q) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 (ln 2/3 + ln 2) = 1/2 ln 4/3 = 0.1438410
    kl = stats.kl_teacher_student(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]))
    assert kl == pytest.approx(0.5 * math.log(4 / 3), abs=1e-7)
    assert stats.kl_teacher_student(t, t) == pytest.approx(0.0, abs=1e-12)
