"""Loss functions of the KD catalogue against values computed by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses.at import at_loss
from pipeline.losses.dkd import dkd_loss, dkd_parts
from pipeline.losses.fitnet import ConvReg, hint_loss
from pipeline.losses.kd import kd_kl, kd_loss
from pipeline.losses.multi_teacher import RULES, camkd_weights, ebkd_weights

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
# Entropy of [3/4, 1/4]: −(0.75·ln 0.75 + 0.25·ln 0.25) = 0.215762 + 0.346574 = 0.562335 nats.
H_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
# KL([3/4, 1/4] ‖ [1/2, 1/2]) = Σ p ln p − Σ p ln ½ = −H + ln 2 = 0.693147 − 0.562335 = 0.130812.
KL_34_U = LN2 - H_34


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_of_identical_logits_is_zero() -> None:
    z = torch.randn(5, 7, dtype=torch.float64)
    # KL(p ‖ p) = Σ p (ln p − ln p) = 0 for any p and any T.
    assert kd_kl(z, z.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_kl(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-12)


def test_kd_at_t1_two_class_example() -> None:
    # teacher [ln 3, 0] -> p_t = [3/4, 1/4]; student [0, 0] -> p_s = [1/2, 1/2]; KL = 0.130812 (see top).
    zs, zt, y = t([0.0, 0.0]), t([LN3, 0.0]), torch.tensor([0])
    assert kd_kl(zs, zt, 1.0).item() == pytest.approx(KL_34_U, abs=1e-9)
    # KD loss with α = 0.9: 0.1·CE + 0.9·KL = 0.1·ln 2 + 0.9·0.130812 = 0.069315 + 0.117731 = 0.187046
    assert kd_loss(zs, zt, y, 1.0, 0.9).item() == pytest.approx(0.1 * LN2 + 0.9 * KL_34_U, abs=1e-9)


def test_kd_t_squared_scaling() -> None:
    # At T = 2, logits 2·[ln 3, 0] give the same tempered p_t = [3/4, 1/4]; student 0 -> uniform.
    # T²·KL = 4 · 0.130812 = 0.523248.
    zs, zt = t([0.0, 0.0]), t([2 * LN3, 0.0])
    assert kd_kl(zs, zt, 2.0).item() == pytest.approx(4 * KL_34_U, abs=1e-9)


def test_dkd_three_class_example() -> None:
    # y = 0; teacher [ln 4, ln 3, 0] -> p_t = [4, 3, 1]/8 = [0.5, 0.375, 0.125]; student 0 -> [1/3]*3.
    # TCKD: KL([0.5, 0.5] ‖ [1/3, 2/3]) = 0.5·ln 1.5 + 0.5·ln 0.75 = 0.5·ln 1.125 = 0.058892.
    # NCKD: non-target teacher [3/4, 1/4], student [1/2, 1/2]: KL = 0.130812.
    zs, zt, y = t([0.0, 0.0, 0.0]), t([LN4, LN3, 0.0]), torch.tensor([0])
    tckd, nckd = dkd_parts(zs, zt, y, 1.0)
    assert tckd.item() == pytest.approx(0.5 * math.log(1.125), abs=1e-9)
    assert nckd.item() == pytest.approx(KL_34_U, abs=1e-9)
    # α = 1, β = 8: 0.058892 + 8·0.130812 = 1.105388.
    assert dkd_loss(zs, zt, y, 1.0, 1.0, 8.0).item() == pytest.approx(
        0.5 * math.log(1.125) + 8 * KL_34_U, abs=1e-9
    )
    # T = 2 on doubled logits: same tempered distributions, both parts times T² = 4.
    tckd2, nckd2 = dkd_parts(zs, 2 * zt, y, 2.0)
    assert (tckd2.item(), nckd2.item()) == pytest.approx((4 * tckd.item(), 4 * nckd.item()), abs=1e-9)


def test_dkd_matches_direct_computation_and_kd_identity() -> None:
    # Direct: the binary and non-target KLs from softmax probabilities, batch-averaged.
    g = torch.Generator().manual_seed(0)
    zs, zt = (
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g, dtype=torch.float64),
    )
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    ps, pt = zs.softmax(1), zt.softmax(1)
    gt = F.one_hot(y, 5).bool()
    bs = torch.stack([ps[gt], 1 - ps[gt]], 1)
    bt = torch.stack([pt[gt], 1 - pt[gt]], 1)
    tckd = (bt * (bt / bs).log()).sum(1).mean()
    qs, qt = ps[~gt].view(6, 4), pt[~gt].view(6, 4)
    qs, qt = qs / qs.sum(1, keepdim=True), qt / qt.sum(1, keepdim=True)
    nckd = (qt * (qt / qs).log()).sum(1).mean()
    got = dkd_parts(zs, zt, y, 1.0)
    assert (got[0].item(), got[1].item()) == pytest.approx((tckd.item(), nckd.item()), abs=1e-9)
    # DKD paper, eq. (1): per sample, KD = TCKD + (1 − p_t,gt)·NCKD (the reformulation DKD decouples).
    a, b = dkd_parts(zs[:1], zt[:1], y[:1], 1.0)
    assert kd_kl(zs[:1], zt[:1], 1.0).item() == pytest.approx(
        a.item() + (1 - pt[0, 0].item()) * b.item(), abs=1e-9
    )


def test_at_identical_is_zero_and_pools_sizes() -> None:
    f = torch.randn(2, 3, 8, 8)
    assert at_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # A 16×16 map whose 2×2 blocks are constant pools exactly to the 8×8 map: (mean_c F²) of the pooled
    # map equals the 8×8 one because every block holds one value, so L_AT = 0 across sizes and channels.
    big = f.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert at_loss(big, f).item() == pytest.approx(0.0, abs=1e-10)
    assert at_loss(f, big[:, :2]).item() > 0  # channel count may differ; different maps give a positive loss


def test_at_value_by_hand() -> None:
    # One channel, 1×2 maps: student [1, 0] -> a = [1, 0]; teacher [1, 1] -> a = [1, 1]/√2.
    # mean((a_s − a_t)²) = ((1 − 0.707107)² + (0 − 0.707107)²)/2 = (0.085786 + 0.5)/2 = 0.292893 = 1 − 1/√2.
    fs, ft = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[1.0, 1.0]]]])
    assert at_loss(fs, ft).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("rule", ["mean_prob", "aver", "ebkd", "camkd"])
@pytest.mark.parametrize("k", [1, 3])
def test_rules_with_identical_teachers_equal_kd(rule: str, k: int) -> None:
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    want = kd_kl(zs, zt, 4.0)
    assert RULES[rule](zs, zt.expand(k, -1, -1), y, 4.0).item() == pytest.approx(want.item(), rel=1e-5)


def test_ebkd_weights_and_value_by_hand() -> None:
    # Teacher 1 [0, 0] -> H1 = ln 2 = 0.693147; teacher 2 [ln 3, 0] -> H2 = 0.562335 (top).
    # K = 2: w_k = (1 − H_k/ΣH)/(K − 1): w1 = H2/ΣH = 0.562335/1.255482 = 0.447904, w2 = H1/ΣH = 0.552096.
    zt = t([0.0, 0.0], [LN3, 0.0]).view(2, 1, 2)
    w = ebkd_weights(zt)[:, 0]
    s = LN2 + H_34
    assert w.tolist() == pytest.approx([H_34 / s, LN2 / s], abs=1e-9)
    # Student uniform: KL1 = 0, KL2 = 0.130812 -> loss = 0.552096·0.130812 = 0.072221.
    got = RULES["ebkd"](t([0.0, 0.0]), zt, torch.tensor([0]), 1.0)
    assert got.item() == pytest.approx(LN2 / s * KL_34_U, abs=1e-9)


def test_camkd_weights_and_value_by_hand() -> None:
    # y = 0. Teacher 1 [0, 0]: CE1 = ln 2; teacher 2 [ln 3, 0]: CE2 = −ln(3/4) = ln(4/3).
    # softmax_k(CE) = [2, 4/3]/(10/3) = [0.6, 0.4]; w = (1 − s)/(K − 1) = [0.4, 0.6].
    zt, y = t([0.0, 0.0], [LN3, 0.0]).view(2, 1, 2), torch.tensor([0])
    assert camkd_weights(zt, y)[:, 0].tolist() == pytest.approx([0.4, 0.6], abs=1e-9)
    # Student uniform: loss = 0.4·0 + 0.6·0.130812 = 0.078487.
    assert RULES["camkd"](t([0.0, 0.0]), zt, y, 1.0).item() == pytest.approx(0.6 * KL_34_U, abs=1e-9)


def test_aver_is_mean_of_per_teacher_kl() -> None:
    # Teachers [0, 0] (KL 0 to a uniform student) and [ln 3, 0] (KL 0.130812): mean = 0.065406.
    zt = t([0.0, 0.0], [LN3, 0.0]).view(2, 1, 2)
    assert RULES["aver"](t([0.0, 0.0]), zt, torch.tensor([0]), 1.0).item() == pytest.approx(
        KL_34_U / 2, abs=1e-9
    )


@pytest.mark.parametrize(
    "s_hw,t_hw,kind",
    [
        (16, 8, torch.nn.Conv2d),
        (4, 8, torch.nn.ConvTranspose2d),
        (8, 8, torch.nn.Conv2d),
        (9, 8, torch.nn.Conv2d),
    ],
)
def test_convreg_shapes(s_hw: int, t_hw: int, kind: type) -> None:
    reg = ConvReg((2, 6, s_hw, s_hw), (2, 10, t_hw, t_hw))
    assert type(reg.conv) is kind
    assert reg(torch.randn(2, 6, s_hw, s_hw)).shape == (2, 10, t_hw, t_hw)


def test_hint_loss_by_hand() -> None:
    # mean((r − t)²) over 4 elements: ((1−0)² + (2−0)² + 0 + (−1−1)²)/4 = (1 + 4 + 0 + 4)/4 = 2.25.
    r, tt = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]]), torch.tensor([[[[0.0, 0.0], [3.0, 1.0]]]])
    assert hint_loss(r, tt).item() == pytest.approx(2.25)
