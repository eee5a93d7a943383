"""KD methods: one small class per method, one contract, one registry.

Contract (design.md, "Methods"):
- `forward(batch, epoch) -> {"loss": weighted total, "logits": student logits, <part>: unweighted part, ...}`
- `trainable_parameters()`: the student plus the method's own modules (never the teachers)
- teachers/knowledge sources stay frozen and in eval mode, whatever `train()` is called with
- `exported()`: the trained networks that become kdpipe artifacts ({"": student} for most methods)

A method is registered with `@register_method("name")` and declares a frozen dataclass `Params`,
parsed strictly from the student's params block named after the method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from pipeline.errors import KdpipeError

REGISTRY: dict[str, type["Method"]] = {}


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


@dataclass
class Context:
    """What a stage hands a method: the fresh student, its knowledge source and run facts."""

    student: nn.Module
    source: Any = None  # a pipeline.sources.KnowledgeSource, or None for methods without teachers
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    epochs: int = 1
    steps_per_epoch: int = 0  # training batches per epoch on this rank (0 = unknown: schedules go per epoch)
    make_student: Callable[[], nn.Module] | None = None  # another fresh student (DML peers)
    assets: dict[str, Any] = field(default_factory=dict)  # stage-provided extras (factor encoder, probe choice...)


class Method(nn.Module):
    """Base class: holds the student (and source); subclasses implement `forward`."""

    name = "base"
    needs_teachers = False  # the stage refuses a student with this method and no teachers
    needs_features = False  # the source must return teacher stage features

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, ctx: Context, p: Any) -> None:
        super().__init__()
        if self.needs_teachers and ctx.source is None:
            raise KdpipeError(f"method {self.name!r} needs at least one teacher; list them under the student's 'teachers'")
        self.student = ctx.student
        self.source = ctx.source
        self.p = p

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [q for q in self.parameters() if q.requires_grad]

    def ddp_modules(self) -> list[str]:
        """Attribute names of the trainable modules that DDP wraps (the source never is)."""
        return [n for n, m in self.named_children() if n != "source" and any(q.requires_grad for q in m.parameters())]

    def exported(self) -> dict[str, nn.Module]:
        return {"": self.student}

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if isinstance(self.source, nn.Module):
            self.source.eval()  # teachers always in eval mode: their BN statistics never move
        return self


def build_method(name: str, ctx: Context, p: Any) -> Method:
    if name not in REGISTRY:
        raise KdpipeError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](ctx, p)


def _load_all() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_load_all()
