"""Architecture registry: `create_model(arch, num_classes, in_channels, **kwargs)`.

Every model's `forward(x)` returns logits only (so it exports as it is), and
`forward_stages(x)` (or `forward(x, stages=True)`) returns `(stage_features, logits)` in one pass
for feature-based KD. `model.stage_channels` lists the channels of each stage feature.
Each arch carries metadata (`model_info`): its family, default input size (px) and whether it is
meant as an edge student; looking it up never builds a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import KdpipeError


@dataclass(frozen=True)
class ModelInfo:
    build: Callable[..., nn.Module]
    family: (
        str  # resnet_cifar, wrn, vgg, resnet, mobilenet_v2, ... (INT8 recipes and student choice key on it)
    )
    default_input_size: int  # square input side in px the family is designed for (32 CIFAR, 224 ImageNet)
    deployable: bool  # meant to run on the edge device as a student (teacher-sized nets are False)


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}  # old name -> canonical name


def register_model(name: str, family: str, input_size: int = 32, deployable: bool = True) -> Callable:
    """Decorator: register a constructor `fn(num_classes, in_channels, **kw) -> nn.Module` and metadata."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(fn, family, input_size, deployable)
        return fn

    return deco


def register_alias(alias: str, name: str) -> None:
    """Another accepted name for a registered arch (kept for params files that use it)."""
    if alias in _REGISTRY or alias in _ALIASES:
        raise ValueError(f"model {alias!r} registered twice")
    _ALIASES[alias] = name


def list_models(aliases: bool = True) -> list[str]:
    """Every accepted arch name, sorted; `aliases=False` leaves out the old names (one entry per network)."""
    return sorted([*_REGISTRY, *(_ALIASES if aliases else ())])


def canonical_arch(arch: str, where: str = "arch") -> str:
    """The registered name `arch` stands for (itself, or an alias's target)."""
    check_arch(arch, where)
    return _ALIASES.get(arch, arch)


def _info(arch: str) -> ModelInfo:
    return _REGISTRY[canonical_arch(arch)]


def check_arch(arch: str, where: str = "arch") -> None:
    """Raise KdpipeError naming `where` if `arch` is not registered (no model is built)."""
    if arch not in _REGISTRY and arch not in _ALIASES:
        raise KdpipeError(
            f"{where}: unknown arch {arch!r}; choose one of: {', '.join(list_models(aliases=False))}"
        )


def model_info(arch: str) -> dict:
    """`{family, default_input_size, deployable}` of a registered arch (aliases resolve to their target)."""
    info = _info(arch)
    return {
        "family": info.family,
        "default_input_size": info.default_input_size,
        "deployable": info.deployable,
    }


def create_model(arch: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown names are a KdpipeError listing the known ones."""
    info = _info(arch)
    try:
        return info.build(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as e:
        raise KdpipeError(
            f"arch {arch!r}: bad arch_kwargs {kwargs} ({e}); fix arch_kwargs in params"
        ) from None


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(
    arch: str, num_classes: int = 10, in_channels: int = 3, input_size: int | None = None, **kwargs
) -> dict:
    """Parameter count and multiply-accumulates of one image at `input_size` (default: the arch's own).

    MACs = FLOPs / 2 as counted by torch.utils.flop_counter (convolutions and matmuls; BN, activations
    and pooling are not counted).
    """
    from torch.utils.flop_counter import FlopCounterMode

    size = input_size or _info(arch).default_input_size
    model = create_model(arch, num_classes, in_channels, **kwargs).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, size, size))
    return {"params": num_parameters(model), "macs": counter.get_total_flops() // 2, "input_size": size}


# Registration happens on import of the architecture modules; a static import, so the code-deps closure
# (pipeline.codedeps reads imports with ast) sees every arch module.
from pipeline.models import mobilenetv2_cifar, resnet_cifar, shufflenet_cifar, tv, vgg, wrn  # noqa: E402,F401
