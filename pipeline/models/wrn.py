"""Wide ResNets (Zagoruyko & Komodakis 2016), pre-activation blocks, as in the KD yardstick (wrn_40_2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise TypeError(f"depth must be 6n+4, got {depth}")
        n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False)
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    WideBlock(w[i] if j == 0 else w[i + 1], w[i + 1], (1 if i == 0 else 2) if j == 0 else 1)
                    for j in range(n)
                ]
            )
            for i in range(3)
        )
        self.bn = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        self.stage_channels = w[1:]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, h = [], self.stem(x)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            # the last stage feature is taken after the final BN+ReLU, as the yardstick code does
            feats.append(F.relu(self.bn(h)) if i == len(self.stages) - 1 else h)
        return feats, self.fc(torch.flatten(F.adaptive_avg_pool2d(feats[-1], 1), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 10)):
    # wrn_28_10 (36M params) is a teacher only
    register_model(f"wrn_{_d}_{_k}", "wrn", 32, deployable=_k < 10)(
        lambda num_classes, in_channels=3, _d=_d, _k=_k: WideResNet(_d, _k, num_classes, in_channels)
    )
