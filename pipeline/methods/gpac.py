"""GPAC: multi-teacher KD guided by linear probes and an adaptive corrector (Neural Networks 164, 2023)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch.nn.functional as F

from pipeline.config import bounded
from pipeline.errors import KdpipeError
from pipeline.knowledge.probes import load_probes
from pipeline.losses.at import at_loss
from pipeline.losses.gpac import beta_at, gpac_kl
from pipeline.methods import Method, register_method

log = logging.getLogger(__name__)


@register_method("gpac")
class GPAC(Method):
    """L = CE(z_s, y) + α·L_MT + β(e)·Σ_l L_AT(F_s^l, F_{T_k*(l)}^l)   (every piece [GUESS]).

    L_MT is `pipeline.losses.gpac.gpac_kl` (KL-based teacher weights + corrector); L_AT the code form of
    attention transfer (`pipeline.losses.at.at_loss`, spatial sizes pooled to the smaller map); β(e) is
    piecewise in the epoch with breakpoints given as fractions of the run's epochs.

    Assets (passed by the distill stage in `ctx.assets`):
    - "probes": path to models/knowledge/probes.pt or the loaded dict (teachers, layers, acc, choice);
      layer l uses teacher k*(l) = choice[l]; `layers` are stage indices (e.g. -1 = last stage) applied
      to the student's and the teachers' stage lists. Layers the student lacks are skipped (warning).
    - "teacher_names": the student's `teachers` list, in the order of the knowledge source; each
      chosen probe teacher is looked up there by name (KdpipeError if absent).
    Without use_probe (or without use_attention) no asset is needed: teacher 0 serves every stage.
    β(e) ramps in linearly over the first `warmup_frac` = 10 % of training (our choice, as for `at`: the
    attention term would otherwise dominate CE on the random student).
    """

    needs_teachers = True
    needs_features = True
    uses_assets = ("probes",)

    @dataclass(frozen=True)
    class Params:
        # weight of the adaptive multi-teacher KL L_MT; 0 switches it off (α=1)
        alpha: float = bounded(1.0, ge=0)
        temperature: float = bounded(4.0, gt=0)  # softmax temperature τ of L_MT (default, yardstick τ=4)
        # temperature of the instruction weights softmax_k(−KL_k/t_w) ([GUESS])
        t_w: float = bounded(1.0, gt=0)
        # corrector strength: the farthest teacher's target mixes in ρ_max of the student ([GUESS])
        rho_max: float = bounded(0.2, ge=0, le=1)
        # β(e) per interval ([GUESS]; AT's β=1000)
        beta_levels: list[float] = bounded([1000.0, 500.0, 100.0], ge=0)
        # interval ends as fractions of the epochs, rounded to whole epochs (the paper: 150, 210 of 240)
        beta_breakpoints: list[float] = bounded([150 / 240, 210 / 240], ge=0, le=1)
        use_probe: bool = True  # False: teacher 0 for every layer instead of the probe choice (ablation)
        use_weights: bool = True  # False: uniform teacher weights 1/K (ablation)
        use_corrector: bool = True  # False: ρ = 0, targets are the teachers' own (ablation)
        use_attention: bool = True  # False: β = 0, no spatial-attention loss (ablation)
        warmup_frac: float = bounded(0.1, ge=0, le=1)  # share of training over which β(e) ramps in; 0 = off

    def __init__(self, ctx, p) -> None:
        super().__init__(ctx, p)
        bp = list(p.beta_breakpoints)
        if len(p.beta_levels) != len(bp) + 1 or bp != sorted(bp):  # each in [0, 1]: checked when params load
            raise KdpipeError(
                "gpac.beta_breakpoints must be ascending fractions in [0, 1], one fewer than gpac.beta_levels"
            )
        pairs = self._layer_teachers(ctx) if p.use_attention else []  # [(stage index, teacher index)]
        depth = [len(t.stage_channels) for t in getattr(self.source, "teachers", [])]
        for l, k in [(l, k) for l, k in pairs if depth and not -depth[k] <= l < depth[k]]:
            log.warning("gpac: teacher %d has %d stages; stage[%d] is skipped", k, depth[k], l)
        self.pairs = [(l, k) for l, k in pairs if not depth or -depth[k] <= l < depth[k]]

    def _layer_teachers(self, ctx) -> list[tuple[int, int]]:
        n_s, K = len(ctx.student.stage_channels), self.source.num_teachers
        if not self.p.use_probe:
            return [(l, 0) for l in range(-n_s, 0)]
        if "probes" not in ctx.assets:
            raise KdpipeError(
                "gpac needs the probe table (run probe-teachers; distill passes models/knowledge/probes.pt), "
                "or set gpac.use_probe: false"
            )
        probes, names = load_probes(ctx.assets["probes"]), ctx.assets.get("teacher_names")
        if names is None or len(names) != K:
            raise KdpipeError(
                f"gpac needs the student's {K} teacher names in assets['teacher_names'] to map the probe "
                "choice"
            )
        pairs = []
        for l, c in zip(probes["layers"], probes["choice"]):
            chosen = probes["teachers"][c]
            if chosen not in names:
                raise KdpipeError(
                    f"probe-teachers chose {chosen!r} for stage[{l}] but the student's teachers are "
                    f"{list(names)}; list the same teachers in probes.teachers and the student's teachers"
                )
            if not -n_s <= l < n_s:
                log.warning("gpac: the student has %d stages; probe layer stage[%d] is skipped", n_s, l)
                continue
            pairs.append((l, list(names).index(chosen)))
        return pairs

    def forward(self, batch, epoch: int) -> dict:
        x, y, _ = batch
        fs, z = self.student(x, stages=True)  # one pass, through DDP's forward when wrapped
        ce = F.cross_entropy(z, y)
        out, loss = {"ce": ce}, ce
        beta = 0.0
        if self.pairs:
            beta = self.warm(self.p.warmup_frac, epoch) * beta_at(
                epoch, self.epochs, self.p.beta_levels, self.p.beta_breakpoints
            )
        if self.p.alpha or beta:
            ft, zt = self.source.features(batch)  # per-teacher stage features and (K, B, C) logits, no grad
        if self.p.alpha:
            mt = gpac_kl(
                z,
                zt,
                self.p.temperature,
                self.p.t_w,
                self.p.rho_max,
                self.p.use_weights,
                self.p.use_corrector,
            )
            loss, out["mt"] = loss + self.p.alpha * mt, mt
        if beta:
            sa = sum(at_loss(fs[l], ft[k][l]) for l, k in self.pairs)
            loss, out["sa"] = loss + beta * sa, sa
        return {"loss": loss, "logits": z, **out}
