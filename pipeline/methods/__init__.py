"""Training methods: one small class per method, one contract, one registry.

Contract (what `pipeline.train.fit` relies on):
- `forward(batch, epoch) -> {"loss": weighted total, "logits": logits of `student` (optional),
  <part>: unweighted part}`;
  `epoch` is the 0-based integer epoch; `fit` sets `method.progress` (epochs done after this step, a float
  e + (i + 1)/steps) before each training step, so schedules need no step counters of their own
- `student`: the network being trained and validated; `trainable_parameters()`: it plus the method's own
  modules (never the teachers); `ddp_modules()`: the attributes DDP wraps
- teachers/knowledge sources stay frozen and in eval mode, whatever `train()` is called with
- `validate(loader, amp) -> dict` (optional): the validation metrics; without it fit reports the top-1 and
  loss of `student`
- `exported()`: the trained networks that become model artifacts ({"": student} for most methods)

A method is registered with `@register_method("name")` and declares a frozen dataclass `Params`, parsed
strictly from the student's params block named after the method. Knowledge jobs (the professor, probes and
factor trainers) register with `job=True`: they are no student method (params refuses them in a model
block); they write one knowledge artifact of kind `kind` through `outputs()` instead of `exported()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from pipeline.errors import KdpipeError

REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str, job: bool = False) -> Callable[[type[Method]], type[Method]]:
    """Register a method class under `name`; `job=True` marks a knowledge job (never a student method)."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name, cls.job = name, job
        REGISTRY[name] = cls
        return cls

    return deco


def student_methods() -> list[str]:
    """Names a model block's `method` may take (every registered method but the knowledge jobs)."""
    return sorted(n for n, c in REGISTRY.items() if not c.job)


@dataclass
class Context:
    """What the job runner hands a method: the fresh student, its knowledge source and run facts."""

    student: nn.Module | None  # the network to train; None for knowledge jobs, which build their own
    source: Any = None  # a pipeline.sources.KnowledgeSource, or None for methods without teachers
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    epochs: int = 1
    make_student: Callable[[], nn.Module] | None = None  # another fresh student (DML peers)
    # stage-provided extras (factor encoder, probe choice, teacher names...)
    assets: dict[str, Any] = field(default_factory=dict)
    # the online teachers (pipeline.sources.OnlineTeachers) even when `source` serves cached logits
    teachers: Any = None
    train_size: int = 0  # images in the training split (0 = unknown)
    val_size: int = 0  # images in the validation split


@dataclass
class Outputs:
    """What a knowledge job leaves after training: its artifact's fields, its metrics and extra files."""

    fields: dict[str, Any]  # artifact fields besides kind/name/params/metrics, including "state_dict"
    metrics: dict[str, Any]  # the job's summary (metrics.json); its flat numbers also go into the artifact
    extras: dict[str, dict] = field(default_factory=dict)  # file suffix -> object saved next to the artifact


class Method(nn.Module):
    """Base class: holds the student (and source); subclasses implement `forward`."""

    name = "base"
    job = False  # set by register_method: a knowledge job, not a student method
    kind: str | None = None  # knowledge jobs: the artifact kind they write (professor | probes | factor)
    needs_teachers = False  # the job refuses a model with this method and no teachers
    needs_features = False  # the source must return teacher stage features
    # ctx.assets entries (stage-made files) the method reads: part of the run's identity
    uses_assets: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val")  # loaders the job builds; without "val" fit validates nothing
    # without augmentation, serve the teachers' logits from one pass over the train split
    precompute_targets = False
    progress: float | None = None  # set by fit before each training step: epochs done after it (float)

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, ctx: Context, p: Any) -> None:
        super().__init__()
        if self.needs_teachers and ctx.source is None:
            raise KdpipeError(
                f"method {self.name!r} needs at least one teacher; list them under the student's 'teachers'"
            )
        self.student = ctx.student
        self.source = ctx.source
        self.p = p
        self.epochs = ctx.epochs

    def warm(self, fraction: float, epoch: int) -> float:
        """Linear warm-up factor min(progress / (fraction·epochs), 1) of a term that must not dominate CE
        while the student is random; progress in epochs as `fit` sets it (e + 1 outside training).
        1 when fraction = 0."""
        if fraction == 0:
            return 1.0
        progress = self.progress if self.training and self.progress is not None else epoch + 1.0
        return min(progress / (fraction * self.epochs), 1.0)

    @classmethod
    def uses(cls, p: Any) -> list[str]:
        """Other registered methods this one runs (their code is part of a job's code), e.g. professor's
        base."""
        return []

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [q for q in self.parameters() if q.requires_grad]

    def ddp_modules(self) -> list[str]:
        """Attribute names of the trainable modules that DDP wraps (the source never is)."""
        return [
            n
            for n, m in self.named_children()
            if n != "source" and any(q.requires_grad for q in m.parameters())
        ]

    def exported(self) -> dict[str, nn.Module]:
        return {} if self.job else {"": self.student}

    def outputs(self, loader: Callable[[str], Iterable], final: dict) -> Outputs:
        """Knowledge jobs: artifact fields, metrics and extra files; `loader(split)` gives a plain loader."""
        raise NotImplementedError(f"{self.name} is not a knowledge job")

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if isinstance(self.source, nn.Module):
            self.source.eval()  # teachers always in eval mode: their BN statistics never move
        return self


def build_method(name: str, ctx: Context, p: Any) -> Method:
    if name not in REGISTRY:
        raise KdpipeError(f"unknown method {name!r}; known: {', '.join(student_methods())}")
    return REGISTRY[name](ctx, p)


def _load_all() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_load_all()
