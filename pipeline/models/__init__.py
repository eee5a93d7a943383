"""Architecture registry: `create_model(arch, num_classes, in_channels)`.

Every model's `forward(x)` returns logits only (so it exports as it is), and
`forward_stages(x)` returns `(stage_features, logits)` in one pass for feature-based KD.
`model.stage_channels` lists the channels of each stage feature.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from pipeline.errors import KdpipeError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Decorator: register a constructor `fn(num_classes, in_channels, **kw) -> nn.Module`."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(arch: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown names are a KdpipeError listing the known ones."""
    if arch not in _REGISTRY:
        raise KdpipeError(f"unknown arch {arch!r}; choose one of: {', '.join(list_models())}")
    try:
        return _REGISTRY[arch](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as e:
        raise KdpipeError(f"arch {arch!r}: bad arch_kwargs {kwargs} ({e}); fix arch_kwargs in params") from None


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Registration happens on import of the architecture modules.
from pipeline.models import resnet_cifar, vgg, wrn, tv  # noqa: E402,F401
