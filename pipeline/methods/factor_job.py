"""The pretrain-factor job: IE-KD's factor auto-encoder on the first teacher's last-stage feature.

`student` is the AutoEncoder (E_T + decoder): the network trained and validated. The teacher is the
frozen knowledge source (eval mode, no grad, never in DDP). forward -> {"loss": L_rec, "rec": L_rec}
with L_rec the ℓ1 mean of pipeline.losses.ie; no logits, so fit logs no train/acc. `validate` reports
the validation L_rec (eval-mode BN) and the teacher's own validation top-1 as a sanity check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from pipeline.knowledge.factor import AutoEncoder, FactorParams, factor_fields
from pipeline.losses.ie import reconstruction_l1
from pipeline.methods import Context, Method, Outputs, register_method


@register_method("factor_job", job=True)
class FactorTrainer(Method):
    """Trains E_T + decoder with L_rec on f_T, the first teacher's last-stage feature; exports nothing."""

    Params = FactorParams
    kind = "factor"
    needs_teachers = True
    needs_features = True

    def __init__(self, ctx: Context, p: FactorParams) -> None:
        super().__init__(ctx, p)
        self.student = AutoEncoder(int(self.source.teachers[0].stage_channels[-1]), p.channels)
        self.__dict__["assets"] = ctx.assets

    def forward(self, batch, epoch: int) -> dict:
        feats, _ = self.source.features(batch)  # no grad, teachers in eval mode
        f = feats[0][-1].detach()
        rec = reconstruction_l1(f, self.student(f)[1])
        return {"loss": rec, "rec": rec}

    @torch.no_grad()
    def validate(self, loader: Iterable, amp: torch.dtype | None = None) -> dict[str, float]:
        """Mean L_rec (weighted by batch size, eval mode) and the teacher's top-1 on `loader`."""
        was = self.training
        self.eval()
        rec, hit, n = 0.0, 0, 0
        for batch in loader:
            with torch.autocast(batch[0].device.type, dtype=amp, enabled=amp is not None):
                feats, z = self.source.features(batch)
                r = reconstruction_l1(feats[0][-1], self.student(feats[0][-1])[1])
            rec += r.float().item() * len(batch[1])
            hit += int((z[0].argmax(1) == batch[1]).sum())
            n += len(batch[1])
        self.train(was)
        return {"val/rec": rec / max(n, 1), "val/teacher_acc": hit / max(n, 1)}

    def outputs(self, loader: Callable[[str], Iterable], final: dict) -> Outputs:
        ae = getattr(self.student, "module", self.student)
        nan = float("nan")
        metrics = {
            "train/rec": final.get("train/rec", nan),
            "teacher_val_acc": final.get("val/teacher_acc", nan),
            "epochs": float(self.p.epochs),
        }
        if "val/rec" in final:
            metrics["val/rec"] = final["val/rec"]
        fields = {
            "teacher": self.assets["teacher_names"][0],
            "teacher_sha256": self.assets["teacher_sha256"][0],
            **factor_fields(ae.encoder),
        }
        return Outputs(fields=fields, metrics=metrics)
