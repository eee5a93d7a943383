"""The probe-teachers job: every (teacher, stage) linear probe trained at once on frozen teachers.

loss = Σ_{k,l} CE(probe_{k,l}); `student` is the ProbeNet. fit validates the ProbeNet on the validation
split after the last epoch (its plain forward is the mean of all probe logits, so `val/acc` is the
probe ensemble's top-1); `outputs` then measures every probe on its own and chooses k*(l).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.knowledge.probes import (
    ProbeNet,
    ProbesParams,
    choose,
    probe_accuracy,
    probe_layers,
    probe_metrics,
)
from pipeline.methods import Context, Method, Outputs, register_method

log = logging.getLogger(__name__)


@register_method("probes_job", job=True)
class ProbeTrainer(Method):
    """Probes on the stages `probe_layers` picks for the context's teachers (an OnlineTeachers source)."""

    Params = ProbesParams
    kind = "probes"
    needs_teachers = True
    needs_features = True

    def __init__(self, ctx: Context, p: ProbesParams) -> None:
        super().__init__(ctx, p)
        if not ctx.val_size:
            raise KdpipeError(
                "the validation split is empty; probes are measured on it, so set data.val_size > 0"
            )
        teachers = list(self.source.teachers)
        self.names = list(ctx.assets.get("teacher_names") or [f"teacher{k}" for k in range(len(teachers))])
        self.__dict__["shas"] = list(ctx.assets.get("teacher_sha256") or [""] * len(teachers))
        layers = probe_layers([len(t.stage_channels) for t in teachers], p.stages)
        self.student = ProbeNet(self.source, layers, ctx.num_classes, p.pool, p.pool_size)
        self.n_layers = len(layers)  # kept here: under DDP `student` is a wrapper without `layers`

    def ddp_modules(self) -> list[str]:
        return ["student"]

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        z = self.student(x, every=True)  # (P, B, C)
        ce = (
            F.cross_entropy(z.float().flatten(0, 1), y.repeat(z.shape[0]), reduction="none")
            .view(z.shape[:2])
            .mean(1)
        )
        n = self.n_layers
        parts = {f"ce_{self.names[i // n]}_l{i % n}": ce[i] for i in range(len(ce))}
        return {"loss": ce.sum(), "logits": z.detach().mean(0), **parts}

    def outputs(self, loader: Callable[[str], Iterable], final: dict) -> Outputs:
        net = getattr(self.student, "module", self.student)
        acc = probe_accuracy(net, loader("val"))
        choice, layers = choose(acc), net.layers
        for j, l in enumerate(layers):
            log.info(
                "probes: stage[%d] -> %s (%s)",
                l,
                self.names[choice[j]],
                ", ".join(f"{n}={a[j]:.4f}" for n, a in zip(self.names, acc)),
            )
        table = {"teachers": self.names, "layers": layers, "acc": acc, "choice": choice, "pool": self.p.pool}
        fields = table | {
            "teacher_sha256": dict(zip(self.names, self.shas)),
            "state_dict": checkpoint.clean_state_dict(net),
        }
        return Outputs(fields=fields, metrics=probe_metrics(table))
