"""KD loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses.kd import kd_kl, kd_loss
from pipeline.losses.multi_teacher import RULES


def test_kl_of_identical_logits_is_zero():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert kd_kl(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_two_classes_at_T1():
    # z_s = [0, 0] -> p_s = [0.5, 0.5]; z_t = [ln 3, 0] -> p_t = [3/4, 1/4]
    # KL(p_t||p_s) = 0.75·ln(0.75/0.5) + 0.25·ln(0.25/0.5) = 0.75·0.405465 − 0.25·0.693147 = 0.130812
    zs, zt = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    assert kd_kl(zs, zt, 1.0).item() == pytest.approx(0.130812, abs=1e-6)


def test_kd_T2_includes_T_squared():
    # at T=2: p_t = softmax([ln3/2, 0]) = [√3/(√3+1), 1/(√3+1)] = [0.633975, 0.366025], p_s = [0.5, 0.5]
    # KL = 0.633975·ln(1.267949) + 0.366025·ln(0.732051) = 0.633975·0.237400 − 0.366025·0.311904
    #    = 0.150506 − 0.114165 = 0.036341; × T² = 4 → 0.145363
    zs, zt = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    assert kd_kl(zs, zt, 2.0).item() == pytest.approx(0.14536, abs=1e-4)
    # the T² factor: the bare KL at T=2 is a quarter of the returned value
    bare = F.kl_div(F.log_softmax(zs / 2, 1), F.softmax(zt / 2, 1), reduction="batchmean")
    assert kd_kl(zs, zt, 2.0).item() == pytest.approx(4 * bare.item(), rel=1e-6)


def test_kd_loss_mixes_ce_and_kl():
    # CE([0,0], y=0) = ln 2 = 0.693147; α = 0.9: 0.1·0.693147 + 0.9·0.130812 = 0.069315 + 0.117731 = 0.187046
    zs, zt, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]), torch.tensor([0])
    assert kd_loss(zs, zt, y, 1.0, 0.9).item() == pytest.approx(0.187046, abs=1e-6)


def test_batchmean_averages_over_samples():
    # two samples: the one above (0.130812) and an identical pair (0) -> mean 0.065406
    zs = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    zt = torch.tensor([[math.log(3), 0.0], [1.0, 2.0]])
    assert kd_kl(zs, zt, 1.0).item() == pytest.approx(0.065406, abs=1e-6)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_with_identical_teachers_equals_single_teacher_kd(rule):
    torch.manual_seed(0)
    zs, zt, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    single = kd_kl(zs, zt, 4.0)
    assert RULES[rule](zs, zt.expand(3, 6, 5), y, 4.0).item() == pytest.approx(single.item(), rel=1e-5)
