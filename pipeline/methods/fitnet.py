"""FitNet hint training with a learned connector (Romero et al., ICLR 2015), single-stage form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.losses.fitnet import ConvReg, hint_loss
from pipeline.methods import Method, register_method


class Connectors(nn.Module):
    """One ConvReg per used teacher behind a single forward, so DDP wraps (and syncs) it as one module."""

    def __init__(self, regs: list[ConvReg]) -> None:
        super().__init__()
        self.regs = nn.ModuleList(regs)

    def forward(self, f: torch.Tensor) -> list[torch.Tensor]:
        return [r(f) for r in self.regs]


@register_method("fitnet")
class FitNet(Method):
    """L = CE(z_s, y) + β·MSE(r(F_s^h), F_t^h)  ("FitNets: Hints for Thin Deep Nets", ICLR 2015).

    `r` is a ConvReg connector (pipeline.losses.fitnet) built in __init__ from the shapes of a dry
    forward of student and teacher on a zero input; it is an attribute of the method, so it trains
    with the student, and it is never exported. Hint stage `hint` = 1 is the student's second stage output
    (RepDistiller/mdistiller HINT_LAYER=2 in their [stem, s1, s2, s3, pool] list), β = 100. The
    guided teacher stage is `teacher_hint`, by default the one aligned with `hint` from the end
    (hint − n_s + n_t: the same index for nets of equal depth); ConvReg bridges any channel count
    and spatial ratio, so any two registry archs pair up.
    The paper's two-stage procedure (hint pre-training, then KD) is replaced by the yardstick's single
    stage: CE and hint loss from the first step. Several teachers: `teacher` picks one (default the
    first), or −1 averages the hint losses over all teachers with one connector each (FitNet-MKD,
    CA-MKD's AVERAGE_LOSS; our choice of default). β ramps in linearly over the first `warmup_frac` = 10 % of
    training (our choice): the connector starts random, so its early hint error says little.
    """

    needs_teachers = True
    needs_features = True

    @dataclass(frozen=True)
    class Params:
        beta: float = 100.0  # weight of the hint MSE (RepDistiller `-b 100`, mdistiller FITNET.FEAT_WEIGHT)
        # fraction of training over which β ramps in from 0; 0 = off
        warmup_frac: float = bounded(0.1, ge=0, le=1)
        # student stage index of the hint (0 = first, negative from the end); 1 = RepDistiller feat[2]
        hint: int = 1
        # teacher stage it learns to match; None = aligned with `hint` from the end
        teacher_hint: int | None = None
        teacher: int = 0  # teacher index giving the hint; −1 = mean of hint losses over all teachers
        # ConvReg ends with ReLU (RepDistiller default), matching post-ReLU stage outputs
        use_relu: bool = True

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        k = ctx.source.num_teachers
        if not (p.teacher == -1 or 0 <= p.teacher < k):
            raise KdpipeError(
                f"fitnet.teacher={p.teacher} but the student has {k} teacher(s); use 0..{k - 1} or -1 (mean)"
            )
        self.teachers_used = list(range(k)) if p.teacher == -1 else [p.teacher]
        s_shape, t_shapes = self._dry_shapes(ctx)
        self.connector = Connectors([ConvReg(s_shape, t_shapes[i], p.use_relu) for i in self.teachers_used])

    @torch.no_grad()
    def _dry_shapes(self, ctx) -> tuple[tuple[int, ...], dict[int, tuple[int, ...]]]:
        """Hint-map shapes of student and each teacher from one forward on zeros (BN stats untouched)."""
        x = torch.zeros(2, ctx.in_channels, ctx.input_size, ctx.input_size)
        batch = (x, torch.zeros(2, dtype=torch.long), torch.arange(2))
        was = self.student.training
        self.student.eval()  # a train-mode dry run would move the student's BN running statistics
        fs, _ = self.student(x, stages=True)
        self.student.train(was)
        ft_all, _ = self.source.features(batch)
        h = self.p.hint
        if not -len(fs) <= h < len(fs):
            raise KdpipeError(
                f"fitnet.hint={h} out of range: the student has {len(fs)} stages; use 0..{len(fs) - 1}"
            )
        self.hint = h % len(fs)
        self.t_hints = {i: self._teacher_stage(len(fs), len(ft_all[i])) for i in self.teachers_used}
        return tuple(fs[self.hint].shape), {i: tuple(ft_all[i][j].shape) for i, j in self.t_hints.items()}

    def _teacher_stage(self, n_s: int, n_t: int) -> int:
        """Non-negative teacher stage index for the hint (explicit, or aligned from the end)."""
        t = self.p.teacher_hint if self.p.teacher_hint is not None else self.hint - n_s + n_t
        if not -n_t <= t < n_t or (self.p.teacher_hint is None and t < 0):
            name = "fitnet.teacher_hint" if self.p.teacher_hint is not None else "fitnet.hint"
            raise KdpipeError(
                f"{name}: teacher stage {t} out of range (student {n_s} stages, teacher {n_t}); "
                f"set fitnet.teacher_hint to 0..{n_t - 1}"
            )
        return t % n_t

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        fs, z = self.student(x, stages=True)
        ft_all, _ = self.source.features(batch)  # no grad
        mapped = self.connector(fs[self.hint])  # one mapped map per used teacher
        hint = torch.stack(
            [hint_loss(m, ft_all[i][self.t_hints[i]]) for m, i in zip(mapped, self.teachers_used)]
        ).mean()
        ce = F.cross_entropy(z, y)
        beta = self.warm(self.p.warmup_frac, epoch) * self.p.beta
        return {"loss": ce + beta * hint, "logits": z, "ce": ce, "hint": hint}
