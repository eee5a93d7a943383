"""Distil from professor-refined targets (Bang, Lee, Shim, Information Sciences 2021): the KD strategies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from pipeline.config import bounded, from_dict
from pipeline.errors import KdpipeError
from pipeline.knowledge.professor import refined_source
from pipeline.losses.professor import mix_logits
from pipeline.methods import REGISTRY, Context, Method, register_method, student_methods
from pipeline.sources import KnowledgeSource


class StrategySource(KnowledgeSource):
    """Teacher logits, refined logits, or their τ-mixture, per `mode` ("teacher" | "professor" | "joint")."""

    def __init__(
        self, teacher: KnowledgeSource, refined: KnowledgeSource, weight: float, temperature: float | None
    ) -> None:
        super().__init__()
        self.teacher, self.refined = teacher, refined
        self.weight, self.temperature, self.mode = weight, temperature, "professor"
        self.num_teachers = teacher.num_teachers

    def train(self, mode: bool = True) -> StrategySource:
        return super().train(False)

    @torch.no_grad()
    def logits(self, batch) -> torch.Tensor:
        if self.mode == "teacher":
            return self.teacher.logits(batch)
        if self.mode == "professor":
            return self.refined.logits(batch)
        z_t = self.teacher.logits(batch)
        z_p = (
            self.refined.refine(batch, z_t) if hasattr(self.refined, "refine") else self.refined.logits(batch)
        )
        # (K, B, C): teacher k mixed with professor k
        return mix_logits(z_t, z_p, self.weight, self.temperature)


@register_method("professor")
class ProfessorKD(Method):
    """A logit-based KD method (`base`: kd, dkd, ...) whose knowledge source is replaced per strategy.

    The professor is a knowledge source, not a loss: the base method runs unchanged on
      replace     refined logits z_P                    S1: distil from the professor instead of the teacher
      joint       τ·log(w·p^τ(z_t) + (1−w)·p^τ(z_P))    S2: for KL-based KD exactly the gradients of
                                                        w·KL(p_T‖p_S) + (1−w)·KL(p_P‖p_S)
                                                        (losses.professor.mix_logits);
                                                        for dkd it is DKD on the mixed target (our choice)
      curriculum  z_t for epochs < round(switch_fraction·epochs), z_P after   S2' [GUESS]
    (all [GUESS]). With K teachers, professor k refines teacher k and the base method's
    multi-teacher rule aggregates as usual. Targets follow the student's `targets`: online runs teacher +
    professor on the augmented batch (labels from the batch); cached reads
    models/knowledge/professor/<T>.targets.pt.

    Assets (from the distill stage): ctx.assets["professor"] = the professor artifact of the one teacher
    (models/knowledge/professor/<teacher>.pt, as stages.knowledge_assets gives it), or a list of them, one
    per teacher in order; cached refined targets are read from <teacher>.targets.pt next to each.
    The base method must be logit-only (no modules of its own, no teacher features).
    """

    needs_teachers = True
    uses_assets = ("professor",)

    @dataclass(frozen=True)
    class Params:
        # how teacher and professor are used [GUESS]
        strategy: Literal["replace", "joint", "curriculum"] = "replace"
        # joint: w, the teacher's share of the mixed target; 1 − w is the professor's [GUESS]
        joint_weight: float = bounded(0.5, ge=0, le=1)
        # curriculum: fraction of the epochs taught by the teacher before the professor [GUESS]
        switch_fraction: float = bounded(0.5, ge=0, le=1)
        base: str = "kd"  # the logit-based method that consumes the targets (kd, dkd, ...)
        # the base method's params block (e.g. {temperature: 4, alpha: 0.9})
        base_args: dict[str, Any] = field(default_factory=dict)

        def __post_init__(self) -> None:  # strict like every params block: a typo fails when params load
            if self.base in REGISTRY:
                from_dict(REGISTRY[self.base].Params, self.base_args, "professor.base_args")

    @classmethod
    def uses(cls, p: Any) -> list[str]:
        return [p.base]  # the base method's code runs every step

    def __init__(self, ctx: Context, p: Params) -> None:
        super().__init__(ctx, p)
        if p.base not in REGISTRY or p.base == self.name or REGISTRY[p.base].job:
            raise KdpipeError(
                f"professor.base: {p.base!r} is not a base KD method; use one of "
                f"{', '.join(n for n in student_methods() if n != self.name)}"
            )
        if REGISTRY[p.base].needs_features:
            raise KdpipeError(
                f"professor.base: {p.base!r} needs teacher features; the professor refines logits only, use "
                "kd or dkd"
            )
        if "professor" not in ctx.assets:
            raise KdpipeError(
                "method 'professor' needs the refine-targets artifacts; run refine-targets for each teacher "
                "(dvc repro)"
            )
        base_p = from_dict(REGISTRY[p.base].Params, p.base_args, "professor.base_args")
        temperature = getattr(base_p, "temperature", None)
        if p.strategy == "joint" and temperature is None:
            raise KdpipeError(
                f"professor.strategy joint mixes targets at the base method's temperature, but {p.base!r} "
                "has none; use replace"
            )
        self.source = StrategySource(
            ctx.source, refined_source(ctx.source, ctx.assets["professor"]), p.joint_weight, temperature
        )
        base = REGISTRY[p.base](dataclasses.replace(ctx, source=self.source), base_p)
        own = {id(q) for q in ctx.student.parameters()} | {id(q) for q in self.source.parameters()}
        if any(id(q) not in own for q in base.parameters()):
            raise KdpipeError(
                f"professor.base: {p.base!r} trains modules of its own; the professor supports logit-only "
                "methods (kd, dkd)"
            )
        self.__dict__["_base"] = base  # not a child: its only module is our student, registered here once
        self.switch_epoch = round(p.switch_fraction * ctx.epochs)

    def mode(self, epoch: int) -> str:
        """Which target the base method sees in this 0-based epoch."""
        if self.p.strategy == "curriculum":
            return "teacher" if epoch < self.switch_epoch else "professor"
        return "joint" if self.p.strategy == "joint" else "professor"

    def train(self, mode: bool = True) -> ProfessorKD:
        super().train(mode)
        self._base.training = mode
        return self

    def forward(self, batch, epoch: int) -> dict:
        self.source.mode = self.mode(epoch)
        self._base.student = self.student  # the loop may have wrapped it (torch.compile, DDP)
        self._base.progress = self.progress  # fit sets it on us; the base method's schedule reads it
        out = self._base(batch, epoch)
        share = {"teacher": 1.0, "professor": 0.0, "joint": self.p.joint_weight}[self.source.mode]
        # logged: which target taught this epoch
        out["teacher_share"] = torch.tensor(share, device=out["loss"].device)
        return out
