"""CIFAR-style ResNets (He et al. 2016, §4.2) as used by the RepDistiller/mdistiller yardstick.

3x3 stem, three stages of BasicBlocks, global average pooling, linear head. resnetN has
(N-2)/6 blocks per stage and widths 16/32/64; the x4 variants have widths 64/128/256 after a
32-channel stem (RepDistiller's resnet8x4/resnet32x4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # option B: 1x1 conv + BN projection
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem + 3 stages; stage features are the outputs of the three stages (after ReLU)."""

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise TypeError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            blocks = [
                BasicBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, num_classes)
        self.stage_channels = list(widths[1:])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats, self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


def _add(name: str, depth: int, widths: tuple[int, int, int, int], deployable: bool = True) -> None:
    @register_model(name, "resnet_cifar", 32, deployable)
    def build(num_classes: int, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_channels)


for _d in (8, 14, 20, 32, 44, 56, 110):
    _add(f"resnet{_d}", _d, (16, 16, 32, 64))
_add("resnet8x4", 8, (32, 64, 128, 256))
_add("resnet32x4", 32, (32, 64, 128, 256), deployable=False)  # 7.4M params: a yardstick teacher
