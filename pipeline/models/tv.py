"""torchvision ImageNet classifiers adapted to kdpipe's contract (any channel count, stage features).

The torchvision network is kept whole as `self.net`, so state_dict keys are torchvision's with a
`net.` prefix (pipeline.models.init maps weight files onto them). Stage features per family:
- resnet: layer1..layer4; regnet: the four trunk stages; shufflenet_v2: stage2..stage4 and conv5;
- mobilenet_v2/v3, efficientnet, convnext: the last `features` block at each output stride
  4, 8, 16 and 32 (found from the blocks' conv strides, so width multipliers keep working).
`in_channels != 3` replaces the stem conv by one with that many input channels; `cifar_stem=True`
(resnets only) swaps the 7x7/2 conv + max-pool for a 3x3/1 conv for 32x32 inputs.
Weights are always randomly initialised: kdpipe never downloads weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_alias, register_model

Chunks = list[tuple[Callable[[torch.Tensor], torch.Tensor], bool]]  # run in order; True = output is a stage


def _resnet(n: nn.Module) -> Chunks:
    return [(lambda x: n.maxpool(n.relu(n.bn1(n.conv1(x)))), False)] + [
        (getattr(n, f"layer{i}"), True) for i in range(1, 5)
    ]


def _regnet(n: nn.Module) -> Chunks:
    return [(n.stem, False)] + [(s, True) for s in n.trunk_output]


def _shufflenet(n: nn.Module) -> Chunks:
    return [
        (lambda x: n.maxpool(n.conv1(x)), False),
        (n.stage2, True),
        (n.stage3, True),
        (n.stage4, True),
        (n.conv5, True),
    ]


def _stride(block: nn.Module) -> int:
    return max([m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d)] or [1])


def _features(n: nn.Module) -> Chunks:
    """Tap the last block at each cumulative output stride >= 4 (resolution halves after it)."""
    blocks, strides, s = list(n.features), [], 1
    for b in blocks:
        s *= _stride(b)
        strides.append(s)
    taps = [
        i
        for i in range(len(blocks))
        if strides[i] >= 4 and (i + 1 == len(blocks) or strides[i + 1] != strides[i])
    ]
    return [(b, i in taps) for i, b in enumerate(blocks)]


def _pool_fc(attr: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    return lambda n, h: getattr(n, attr)(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


# family -> (chunks of the trunk, head from the last trunk output to logits)
_LAYOUTS: dict[
    str, tuple[Callable[[nn.Module], Chunks], Callable[[nn.Module, torch.Tensor], torch.Tensor]]
] = {
    "resnet": (_resnet, _pool_fc("fc")),
    "regnet": (_regnet, _pool_fc("fc")),
    "shufflenet_v2": (_shufflenet, _pool_fc("fc")),
    "mobilenet_v2": (_features, _pool_fc("classifier")),
    "mobilenet_v3": (_features, _pool_fc("classifier")),
    "efficientnet": (_features, _pool_fc("classifier")),
    # classifier: LayerNorm2d, Flatten, Linear
    "convnext": (_features, lambda n, h: n.classifier(n.avgpool(h))),
}


def _adapt_stem(net: nn.Module, in_channels: int) -> None:
    """Replace the first conv by one taking `in_channels` channels (same kernel, stride, padding)."""
    name, conv = next((k, m) for k, m in net.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, new)


def _out_channels(chunk: nn.Module) -> int:
    return [m for m in chunk.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


# torchvision's MobileNetV3 keeps BatchNorm running statistics with momentum 0.01 (TensorFlow's 0.99 decay,
# made for 600-epoch ImageNet schedules). Over a few epochs they lag the weights so far that eval accuracy
# collapses (mobilenet_v3_small, 3 epochs on 15,500 images: 30 % on validation, 100 % once the statistics
# were re-estimated). PyTorch's default 0.1 follows the last ~10 steps; every family gets it.
BN_MOMENTUM = 0.1


class TorchvisionNet(nn.Module):
    """A torchvision classifier with `forward_stages`; `family` picks the stage layout."""

    def __init__(
        self, name: str, family: str, num_classes: int, in_channels: int = 3, cifar_stem: bool = False, **kw
    ) -> None:
        super().__init__()
        import torchvision.models  # imported here: it costs ~1.5 s and most runs never build these

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kw)
        for m in net.modules():  # momentum is no weight: files from disk load the same
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = BN_MOMENTUM
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            _adapt_stem(net, in_channels)
        self.net, self.family = net, family
        chunks = _LAYOUTS[family][0](net)
        # its blocks concatenate two branches: the last conv sees half the channels
        if family == "shufflenet_v2":
            self.stage_channels = list(net._stage_out_channels[1:])
        else:  # a stage's last conv (projection / final 1x1 / depthwise in ConvNeXt) has the stage's width
            self.stage_channels = [_out_channels(c) for c, tap in chunks if tap]

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        chunks, head = _LAYOUTS[self.family]
        feats, h = [], x
        # rebuilt per call: holds no module references that deepcopy would miss
        for chunk, tap in chunks(self.net):
            h = chunk(h)
            if tap:
                feats.append(h)
        return feats, head(self.net, h)

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


def _add(name: str, family: str, deployable: bool, width: bool = False, cifar_stem: bool = False) -> None:
    """Register `name` (a torchvision builder) with only the kwargs its family supports."""
    if width:

        def build(num_classes: int, in_channels: int = 3, width_mult: float = 1.0) -> TorchvisionNet:
            return TorchvisionNet(name, family, num_classes, in_channels, width_mult=width_mult)
    elif cifar_stem:

        def build(num_classes: int, in_channels: int = 3, cifar_stem: bool = False) -> TorchvisionNet:
            return TorchvisionNet(name, family, num_classes, in_channels, cifar_stem=cifar_stem)
    else:

        def build(num_classes: int, in_channels: int = 3) -> TorchvisionNet:
            return TorchvisionNet(name, family, num_classes, in_channels)

    register_model(name, family, 224, deployable)(build)


# deployable: student-sized (<= ~12M params at 1000 classes) and built from mobile-friendly ops
for _n, _dep in (("resnet18", True), ("resnet34", False), ("resnet50", False)):
    _add(_n, "resnet", _dep, cifar_stem=True)
    register_alias(f"tv_{_n}", _n)  # the names params files used before the canonical ones
_add("mobilenet_v2", "mobilenet_v2", True, width=True)
_add("mobilenet_v3_small", "mobilenet_v3", True, width=True)
_add("mobilenet_v3_large", "mobilenet_v3", True, width=True)
_add("shufflenet_v2_x0_5", "shufflenet_v2", True)
_add("shufflenet_v2_x1_0", "shufflenet_v2", True)
_add("efficientnet_b0", "efficientnet", True)
_add("regnet_y_400mf", "regnet", True)
_add("convnext_tiny", "convnext", False)
