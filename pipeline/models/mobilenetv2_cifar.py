"""CIFAR MobileNetV2 of the KD yardstick tables (RepDistiller's `MobileNetV2` / `mobile_half`).

Expansion T = 6, width multiplier 0.5 by default, 3x3/2 stem, seven inverted-residual groups
(the ImageNet table with strides 1, 1, 2, 2, 1, 2, 1, so 32 px inputs end at 2x2), a 1x1 conv to
1280 channels, global average pooling and a linear head. Stage features are the yardstick's
four maps: the outputs of groups 2, 3, 5 and 7 (16, 8, 4, 2 px at 32 px input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_model

# expansion placeholder "T", output channels c, repeats n, first stride s (per group)
_GROUPS = [
    (1, 16, 1, 1),
    ("T", 24, 2, 1),
    ("T", 32, 3, 2),
    ("T", 64, 4, 2),
    ("T", 96, 3, 1),
    ("T", 160, 3, 2),
    ("T", 320, 1, 1),
]
_TAPS = (1, 2, 4, 6)  # group indices whose outputs are stage features


def _conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU), 3x3 depthwise (ReLU), 1x1 linear projection; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv = nn.Sequential(
            *_conv_bn(cin, mid, 1),
            *_conv_bn(mid, mid, 3, stride, groups=mid),
            *_conv_bn(mid, cout, 1, relu=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Cifar(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int = 3, width_mult: float = 0.5, expand: int = 6
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise TypeError(f"width_mult must be > 0, got {width_mult}")
        cin = int(32 * width_mult)
        self.stem = nn.Sequential(*_conv_bn(in_channels, cin, 3, 2))
        groups = []
        for t, c, n, s in _GROUPS:
            cout = int(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, expand if t == "T" else t))
                cin = cout
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(groups)
        # the yardstick never narrows the last conv
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*_conv_bn(cin, last, 1))
        self.fc = nn.Linear(last, num_classes)
        self.stage_channels = [int(_GROUPS[i][1] * width_mult) for i in _TAPS]
        self._init()

    def _init(self) -> None:
        # the yardstick's init: conv N(0, 2/(k·k·C_out)), BN (1, 0), linear N(0, 0.01²) with zero bias
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(
                    m.weight, 0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                )
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, h = [], self.stem(x)
        for i, group in enumerate(self.blocks):
            h = group(h)
            if i in _TAPS:
                feats.append(h)
        h = self.conv2(h)
        return feats, self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


@register_model("mobilenetv2_cifar", "mobilenetv2_cifar", 32)
def build(num_classes: int, in_channels: int = 3, width_mult: float = 0.5) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(num_classes, in_channels, width_mult)
