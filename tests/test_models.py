"""Model registry: every arch's contract (logits, stages, training step, 1-channel input), metadata."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from pipeline.errors import KdpipeError
from pipeline.models import check_arch, create_model, describe, list_models, model_info, num_parameters

# big nets only run a forward pass (no training step) to keep the file fast
BIG = {
    "resnet34",
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0",
    "regnet_y_400mf",
    "mobilenet_v3_large",
    "wrn_28_10",
    "vgg16",
    "vgg19",
    "resnet110",
}
FAMILIES = {
    "resnet_cifar",
    "wrn",
    "vgg",
    "resnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "shufflenet_v2",
    "efficientnet",
    "regnet",
    "convnext",
    "mobilenetv2_cifar",
    "shufflenet_cifar",
}
# 32 px is the smallest input every family takes (ConvNeXt's stem is 4x4/4, then /8 more)
SIZE, CLASSES = (
    32,
    5,
)


@pytest.mark.parametrize("arch", list_models(aliases=False))
def test_contract_with_one_channel(arch: str) -> None:
    torch.manual_seed(0)
    # eval: dropout/stochastic depth off
    model = create_model(arch, num_classes=CLASSES, in_channels=1).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
        feats, logits2 = model.forward_stages(x)
        _, logits3 = model(x, stages=True)  # the DDP-friendly form
    assert logits.shape == (2, CLASSES)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(logits3, logits)
    assert [f.shape[1] for f in feats] == model.stage_channels and len(feats) >= 3
    assert all(f.ndim == 4 and f.shape[0] == 2 for f in feats)
    sides = [f.shape[-1] for f in feats]
    assert sides == sorted(sides, reverse=True)  # stages never grow in resolution


def _first_conv_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return convs[0], heads[-1]


@pytest.mark.parametrize("arch", [a for a in list_models(aliases=False) if a not in BIG])
def test_one_sgd_step_moves_stem_and_head(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=CLASSES).train()
    stem, head = _first_conv_and_head(model)
    before = stem.weight.detach().clone(), head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, SIZE, SIZE)), torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(stem.weight, before[0]) and not torch.equal(head.weight, before[1])


@pytest.mark.parametrize("arch", list_models(aliases=False))
def test_metadata(arch: str) -> None:
    info = model_info(arch)
    assert info["family"] in FAMILIES and isinstance(info["deployable"], bool)
    assert info["default_input_size"] == (
        32
        if info["family"] in {"resnet_cifar", "wrn", "vgg", "mobilenetv2_cifar", "shufflenet_cifar"}
        else 224
    )


def test_required_archs_and_aliases() -> None:
    need = {
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "efficientnet_b0",
        "regnet_y_400mf",
        "convnext_tiny",
        "mobilenetv2_cifar",
        "shufflenetv1",
        "shufflenetv2",
        "resnet20",
        "resnet8x4",
        "wrn_40_2",
        "vgg8",
    }
    assert need <= set(list_models(aliases=False))
    assert {"tv_resnet18", "tv_resnet34", "tv_resnet50"} <= set(list_models()) - set(
        list_models(aliases=False)
    )
    assert model_info("tv_resnet50") == model_info("resnet50")
    old = create_model("tv_resnet18", 4, cifar_stem=True)  # the old adapter's kwarg still works
    # same keys: old artifacts load
    assert set(old.state_dict()) == set(create_model("resnet18", 4).state_dict())


def test_lookups_never_import_torchvision() -> None:
    code = (
        "import sys; import pipeline.models as m; m.model_info('convnext_tiny'); "
        "m.check_arch('resnet50', 'x'); "
        "m.list_models(aliases=False); assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adapter_matches_torchvision_and_width_mult() -> None:
    import torchvision

    for arch in ("mobilenet_v2", "shufflenet_v2_x0_5", "regnet_y_400mf"):
        assert num_parameters(create_model(arch, 1000)) == num_parameters(getattr(torchvision.models, arch)())
    half = create_model("mobilenet_v3_small", 10, width_mult=0.5)
    assert num_parameters(half) < num_parameters(create_model("mobilenet_v3_small", 10))
    # torchvision rounds c·0.5 to a multiple of 8 (never below 90 %): 16→8, 24→12→16, 48→24;
    # the last conv is 6 × (96·0.5) = 288
    assert half.stage_channels == [8, 16, 24, 288]


def test_known_parameter_counts() -> None:
    # the yardstick's CIFAR-100 counts (RepDistiller/CRD tables): resnet8 ≈ 0.08M, resnet20 ≈ 0.28M,
    # resnet32x4 ≈ 7.4M,
    # MobileNetV2 (×0.5) ≈ 0.81M, ShuffleNetV1 ≈ 0.95M, ShuffleNetV2 ≈ 1.35M
    expect = {
        "resnet8": (75e3, 90e3),
        "resnet20": (270e3, 290e3),
        "resnet32x4": (7.3e6, 7.5e6),
        "mobilenetv2_cifar": (0.80e6, 0.83e6),
        "shufflenetv1": (0.94e6, 0.96e6),
        "shufflenetv2": (1.34e6, 1.37e6),
    }
    for arch, (lo, hi) in expect.items():
        assert lo < num_parameters(create_model(arch, 100)) < hi, arch


def test_describe_counts_macs_by_hand() -> None:
    # resnet8, 3x32x32, 10 classes; MACs = out_H·out_W·C_out·C_in·k² per conv:
    # stem 32·32·16·3·9 = 442,368; stage 1: 2 × 32·32·16·16·9 = 4,718,592;
    # stage 2: 16·16·32·16·9 + 16·16·32·32·9 + 1x1 shortcut 16·16·32·16 = 1,179,648 + 2,359,296 + 131,072;
    # stage 3: 8·8·64·32·9 + 8·8·64·64·9 + 8·8·64·32 = 1,179,648 + 2,359,296 + 131,072; fc 64·10 = 640
    macs = 442_368 + 4_718_592 + 2 * (1_179_648 + 2_359_296 + 131_072) + 640
    d = describe("resnet8")
    assert d == {"params": num_parameters(create_model("resnet8", 10)), "macs": macs, "input_size": 32}
    # convs scale with H·W, fc does not
    assert describe("resnet8", input_size=16)["macs"] == (macs - 640) // 4 + 640


def test_unknown_arch_lists_known_ones() -> None:
    with pytest.raises(KdpipeError, match=r"unknown arch 'resnet9'.*resnet8"):
        create_model("resnet9", 10)
    with pytest.raises(KdpipeError, match=r"^students\.s1\.arch: unknown arch 'mobilenet_v4'.*convnext_tiny"):
        check_arch("mobilenet_v4", "students.s1.arch")


def test_bad_arch_kwargs_is_a_user_error() -> None:
    with pytest.raises(KdpipeError, match=r"bad arch_kwargs"):
        create_model("resnet8", 10, 3, width=3)
    with pytest.raises(KdpipeError, match=r"bad arch_kwargs"):
        create_model("resnet50", 10, 3, width_mult=0.5)  # resnets have no width multiplier


def test_torchvision_batchnorm_tracks_recent_steps() -> None:
    """torchvision builds mobilenet_v3 with BN momentum 0.01; kdpipe uses 0.1 so that running statistics
    follow a short training run. One train-mode pass of a constant batch (3.0) from reset statistics:
    running_mean = (1 - 0.1) x 0 + 0.1 x 3 = 0.3 (with torchvision's 0.01 it would be 0.03)."""
    from pipeline.models.tv import BN_MOMENTUM

    net = create_model("mobilenet_v3_small", 4, 3)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and BN_MOMENTUM == 0.1 and all(m.momentum == 0.1 for m in bns)
    stem = bns[0]
    stem.reset_running_stats()
    x = torch.full((2, stem.num_features, 4, 4), 3.0)
    stem.train()(x)
    assert torch.allclose(stem.running_mean, torch.full_like(stem.running_mean, 0.3))
