"""torchvision ImageNet ResNets adapted to kdpipe's contract (any channel count, stage features).

`cifar_stem=True` replaces the 7x7/2 conv + max-pool with a 3x3/1 conv for 32x32 inputs.
Weights are always randomly initialised: kdpipe never downloads weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.models import register_model


class TorchvisionResNet(nn.Module):
    def __init__(self, name: str, num_classes: int, in_channels: int = 3, cifar_stem: bool = False) -> None:
        super().__init__()
        import torchvision.models  # imported here: it costs ~1.5 s and most runs never build these

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.net = net
        self.stage_channels = [_out(net.layer1), _out(net.layer2), _out(net.layer3), _out(net.layer4)]

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = self.net
        h = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        feats = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            h = layer(h)
            feats.append(h)
        return feats, n.fc(torch.flatten(n.avgpool(h), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


def _out(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


for _n in ("resnet18", "resnet34", "resnet50"):
    register_model(f"tv_{_n}")(
        lambda num_classes, in_channels=3, cifar_stem=False, _n=_n: TorchvisionResNet(_n, num_classes, in_channels, cifar_stem)
    )
