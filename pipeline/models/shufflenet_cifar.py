"""CIFAR ShuffleNets of the KD yardstick tables (RepDistiller's ShuffleV1 / ShuffleV2).

Both start with a 1x1 conv to 24 channels at full resolution (no stride, no max-pool: 32 px inputs
end at 4x4 after three stride-2 stages), global average pooling and a linear head. Stage features
are the outputs of the three stages (16, 8, 4 px at 32 px input).
- shufflenetv1 (Zhang et al. 2018): groups 3, widths 240/480/960, 4/8/4 units; stride-2 units
  concatenate an average-pooled shortcut, the first unit skips grouping its 1x1 conv (24 inputs).
- shufflenetv2 (Ma et al. 2018): each stage is a down-sampling unit then 3/7/3 basic units
  (channel split, 1x1-dw3x3-1x1 on one half, concat, shuffle); a 1x1 conv to 1024 before pooling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register_model


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g·c, H, W) -> interleave the g groups' channels."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _bn_conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class V1Unit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        branch = cout - cin if stride == 2 else cout  # stride 2 concatenates the input as a shortcut
        mid = branch // 4
        self.g1 = 1 if cin == 24 else groups  # the stem's 24 channels are not grouped
        self.conv1 = _bn_conv(cin, mid, groups=self.g1)
        self.conv2 = _bn_conv(mid, mid, 3, stride, groups=mid)
        self.conv3 = _bn_conv(mid, branch, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.conv1(x)), self.g1)
        out = self.conv3(F.relu(self.conv2(out)))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class V2Unit(nn.Module):
    """Basic unit (stride 1: split in halves) or down-sampling unit (stride 2: both branches see all)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, half = stride, cout // 2
        if stride == 2:
            self.left = nn.Sequential(_bn_conv(cin, cin, 3, 2, groups=cin), _bn_conv(cin, half), nn.ReLU())
        right_in = cin if stride == 2 else cin // 2
        self.right = nn.Sequential(
            _bn_conv(right_in, half),
            nn.ReLU(),
            _bn_conv(half, half, 3, stride, groups=half),
            _bn_conv(half, half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.left(x), self.right(x)], 1)
        else:
            keep, work = x.chunk(2, dim=1)
            out = torch.cat([keep, self.right(work)], 1)
        return channel_shuffle(out, 2)


class CifarShuffleNet(nn.Module):
    def __init__(
        self,
        stages: list[nn.Sequential],
        widths: list[int],
        last: int | None,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(_bn_conv(in_channels, 24), nn.ReLU())
        self.stages = nn.ModuleList(stages)
        self.conv_last = nn.Sequential(_bn_conv(widths[-1], last), nn.ReLU()) if last else nn.Identity()
        self.fc = nn.Linear(last or widths[-1], num_classes)
        self.stage_channels = list(widths)

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        h = self.conv_last(h)
        return feats, self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    def forward(self, x: torch.Tensor, stages: bool = False):
        # `stages=True` lets DDP-wrapped students return features through DDP's own forward
        return self.forward_stages(x) if stages else self.forward_stages(x)[1]


def shufflenet_v1(num_classes: int, in_channels: int = 3, groups: int = 3) -> CifarShuffleNet:
    widths, cin, stages = {3: [240, 480, 960]}.get(groups), 24, []
    if widths is None:
        raise TypeError(f"groups must be 3 (the yardstick's ShuffleV1), got {groups}")
    for w, n in zip(widths, (4, 8, 4)):
        stages.append(
            nn.Sequential(*[V1Unit(cin if j == 0 else w, w, 2 if j == 0 else 1, groups) for j in range(n)])
        )
        cin = w
    return CifarShuffleNet(stages, widths, None, num_classes, in_channels)


# net_size -> (stage widths, last conv width); every stage has 3/7/3 basic units after its down-sampling unit
_V2 = {
    0.5: ([48, 96, 192], 1024),
    1.0: ([116, 232, 464], 1024),
    1.5: ([176, 352, 704], 1024),
    2.0: ([224, 488, 976], 2048),
}


def shufflenet_v2(num_classes: int, in_channels: int = 3, net_size: float = 1.0) -> CifarShuffleNet:
    if net_size not in _V2:
        raise TypeError(f"net_size must be one of {sorted(_V2)}, got {net_size}")
    (widths, last), cin, stages = _V2[net_size], 24, []
    for w, n in zip(widths, (3, 7, 3)):
        stages.append(nn.Sequential(V2Unit(cin, w, 2), *[V2Unit(w, w, 1) for _ in range(n)]))
        cin = w
    return CifarShuffleNet(stages, widths, last, num_classes, in_channels)


register_model("shufflenetv1", "shufflenet_cifar", 32)(shufflenet_v1)
register_model("shufflenetv2", "shufflenet_cifar", 32)(shufflenet_v2)
