"""CIFAR VGG with BN (vgg8/11/13/16/19) as in the RepDistiller yardstick: 5 conv blocks, one linear head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_model

# conv widths per block; RepDistiller's vgg8 has one conv per block
_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGG(nn.Module):
    """Stage features are the outputs of blocks 1..4 (after ReLU, before pooling); logits from block 5."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for widths in _CFG[depth]:
            layers = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(512, num_classes)
        self.stage_channels = [ws[-1] for ws in _CFG[depth][1:4]]

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, h = [], x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if 1 <= i <= 3:
                feats.append(h)
            if i < 4:
                h = F.max_pool2d(h, 2) if h.shape[-1] > 1 else h
        return feats, self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


for _d in _CFG:
    # vgg8 (~4M params) is a yardstick student; the deeper ones are teachers
    register_model(f"vgg{_d}", "vgg", 32, deployable=_d == 8)(
        lambda num_classes, in_channels=3, _d=_d: VGG(_d, num_classes, in_channels)
    )
