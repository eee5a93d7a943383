"""Model registry: shapes, stage features, errors."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import KdpipeError
from pipeline.models import create_model, list_models, num_parameters

SMALL = [a for a in list_models() if a not in ("wrn_28_10", "tv_resnet50", "tv_resnet34", "resnet110", "vgg16", "vgg19")]


@pytest.mark.parametrize("arch", SMALL)
def test_logits_and_stages_in_one_pass(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)  # 16 px keeps the big archs fast; VGG needs >= 16
    logits = model(x)
    feats, logits2 = model.forward_stages(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, logits2)
    assert [f.shape[1] for f in feats] == model.stage_channels
    assert all(f.ndim == 4 and f.shape[0] == 2 for f in feats)
    feats3, logits3 = model(x, stages=True)  # the DDP-friendly form
    torch.testing.assert_close(logits3, logits)


def test_known_parameter_counts():
    # the yardstick's CIFAR-100 counts (RepDistiller): resnet8 ≈ 0.08M, resnet20 ≈ 0.28M, resnet32x4 ≈ 7.4M
    assert 75_000 < num_parameters(create_model("resnet8", 100)) < 90_000
    assert 270_000 < num_parameters(create_model("resnet20", 100)) < 290_000
    assert 7.3e6 < num_parameters(create_model("resnet32x4", 100)) < 7.5e6


def test_unknown_arch_lists_known_ones():
    with pytest.raises(KdpipeError, match=r"unknown arch 'resnet9'.*resnet8"):
        create_model("resnet9", 10)


def test_bad_arch_kwargs_is_a_user_error():
    with pytest.raises(KdpipeError, match=r"bad arch_kwargs"):
        create_model("resnet8", 10, 3, width=3)
