"""The professor's training job (refine-targets): a CAAE trained on one frozen teacher's logits.

Training through the one loop (`pipeline.train.fit`, one optimizer, one loss): `forward` returns
L = L_prof(E_P, G_P) + L_Dz(D_z) + L_Dp(D_p), built so that each part reaches only its own parameters:
the discriminator losses see *detached* latents/targets, and the generator's adversarial terms run the
discriminators through `frozen_call` (torch.func.functional_call with detached parameters), so gradients
flow through D into E_P/G_P but never into D's parameters. Adam normalises each parameter on its own, so
one Adam over the three disjoint groups equals the CAAE's three Adams (same lr, β) with simultaneous
updates. The refined target is label-conditioned, so fit validates nothing; `outputs` measures the
refined targets on the un-augmented train and val splits after training and caches them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.knowledge.professor import (
    ProfessorNet,
    ProfessorParams,
    ProfessorSource,
    mlp,
    refine_splits,
    target_metrics,
)
from pipeline.losses import professor as L
from pipeline.methods import Context, Method, Outputs, register_method


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Run `module` with detached parameters: gradients reach the inputs, never its parameters.

    Buffers are cloned, so a train-mode BatchNorm uses batch statistics but its running statistics
    are updated only by the discriminator's own pass. A DDP wrapper is looked through.
    """
    m = getattr(module, "module", module)
    state = {n: t.detach() for n, t in m.named_parameters()} | {n: t.clone() for n, t in m.named_buffers()}
    return torch.func.functional_call(m, state, args)


@register_method("professor_job", job=True)
class ProfessorTrainer(Method):
    """`student` is the ProfessorNet (E_P + G_P), built here unless the context brings one.

    `source` gives the frozen teacher's logits (K = 1) for the batch (online, or looked up when the job
    does not augment); `logits` are the refined logits, so fit's train/acc is the refined-target top-1.
    """

    Params = ProfessorParams
    kind = "professor"
    needs_teachers = True
    splits = ("train",)
    precompute_targets = True

    def __init__(self, ctx: Context, p: ProfessorParams) -> None:
        super().__init__(ctx, p)
        if ctx.train_size % p.batch_size == 1:
            raise KdpipeError(
                f"professor.batch_size={p.batch_size} leaves a last batch of 1 sample, "
                "which batch norm cannot train on; change it"
            )
        if self.source.num_teachers != 1:
            raise KdpipeError(
                f"a professor refines one teacher, got {self.source.num_teachers}; "
                "run refine-targets once per teacher"
            )
        c = ctx.num_classes
        self.student = ctx.student if ctx.student is not None else ProfessorNet(c, p)
        self.d_z = mlp([p.latent_dim, *p.latent_disc_hidden, 1], nn.ReLU(), True)
        self.d_p = mlp([2 * c, *p.cond_disc_hidden, 1], nn.LeakyReLU(0.2), False)
        # plain attribute: the online teacher, for the cached targets
        self.__dict__["teachers"] = ctx.teachers
        self.__dict__["assets"] = ctx.assets

    def forward(self, batch, epoch: int) -> dict:
        p, y = self.p, batch[1]
        z_t = self.source.logits(batch)[0].float()  # (B, C), no grad
        z_p, latent = self.student(z_t, y, with_latent=True)
        onehot = F.one_hot(y, z_t.shape[1]).float()
        p_t, p_p = F.softmax(z_t / p.temperature, dim=1), F.softmax(z_p.float() / p.temperature, dim=1)
        rec, acc = L.rec_loss(z_p.float(), z_t, p.temperature), L.acc_loss(z_p.float(), y)
        adv_z = L.adv_gen_loss(frozen_call(self.d_z, latent).float())  # reaches E_P only
        # reaches E_P and G_P
        adv_p = L.adv_gen_loss(frozen_call(self.d_p, torch.cat([p_p, onehot], 1)).float())
        # discriminators: one pass each on [real; detached fake], so they reach only their own parameters
        prior = torch.rand_like(latent) * 2 - 1  # u ~ U[−1, 1]^d_z
        dz = self.d_z(torch.cat([prior, latent.detach()])).float()
        disc_z = L.adv_disc_loss(dz[: len(y)], dz[len(y) :])
        ok = z_t.argmax(1) == y  # "real" targets: the teacher's correctly classified samples
        dp = self.d_p(
            torch.cat([torch.cat([p_t[ok], onehot[ok]], 1), torch.cat([p_p.detach(), onehot], 1)])
        ).float()
        disc_p = L.adv_disc_loss(dp[: int(ok.sum())], dp[int(ok.sum()) :])
        gen = p.lambda_rec * rec + p.lambda_acc * acc + p.lambda_z * adv_z + p.lambda_p * adv_p
        return {
            "loss": gen + disc_z + disc_p,
            "logits": z_p,
            "rec": rec,
            "acc_ce": acc,
            "adv_z": adv_z,
            "adv_p": adv_p,
            "disc_z": disc_z,
            "disc_p": disc_p,
        }

    def outputs(self, loader: Callable[[str], Iterable], final: dict) -> Outputs:
        """Refined targets of the un-augmented splits (cached next to the artifact) and their metrics."""
        net, teachers = self.student, self.teachers if self.teachers is not None else self.source
        tables = refine_splits(
            ProfessorSource(teachers, [net]), {s: loader(s) for s in ("train", "val")}, net.num_classes
        )
        name, sha = self.assets["teacher_names"][0], self.assets["teacher_sha256"][0]
        summary: dict = {
            "step": self.p.epochs,
            "professor_params": sum(q.numel() for q in net.parameters()),
            "train": {k.removeprefix("train/"): v for k, v in final.items() if k.startswith("train/")},
        }
        for s in ("train", "val"):
            if len(tables[s]):
                m = target_metrics(tables[s], tables[f"teacher_{s}"], tables[f"y_{s}"], self.p.temperature)
                summary.setdefault(s, {}).update(m)
        targets = {
            "train": tables["train"],
            "val": tables["val"],
            "teacher": name,
            "teacher_sha256": sha,
            "augmented": False,
        }
        fields = {
            "num_classes": net.num_classes,
            "teacher": name,
            "teacher_sha256": sha,
            "state_dict": checkpoint.clean_state_dict(net),
        }
        return Outputs(fields=fields, metrics=summary, extras={".targets": targets})
