"""Professor model: a conditional adversarial autoencoder (CAAE) that refines a frozen teacher's soft targets.

Bang, Lee, Shim, "Distilling from professors", Information Sciences 576 (2021). Only the abstract was
available; every network below is a [GUESS] design, each part mirroring the CAAE of Zhang et al.
(CVPR 2017): teacher soft target ↔ image, ground-truth class ↔ age label, latent z ↔ instance-specific
inter-class structure. Losses: pipeline/losses/professor.py; training: pipeline/methods/professor_job.py.

The artifact (kind "professor", models/knowledge/professor/<teacher>.pt) holds E_P + G_P; the cached
refined logits of the un-augmented train/val splits sit next to it in <teacher>.targets.pt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.config import bounded, from_dict
from pipeline.errors import KdpipeError
from pipeline.sources import CachedLogits, KnowledgeSource


@dataclass(frozen=True)
class ProfessorParams:
    """The `professor` section of params.yaml (the refine-targets stage; the professor_job method's
    Params)."""

    # teachers that get a professor (dvc.yaml `foreach`); names as in distill
    teachers: list[str] = field(default_factory=list)
    # τ of p^τ = softmax(z/τ): encoder input log p^τ(z_t), L_rec, D_p inputs [GUESS]
    temperature: float = bounded(4.0, gt=0)
    latent_dim: int = bounded(64, ge=1)  # d_z, size of E_P's tanh latent and of the U[−1,1] prior [GUESS]
    encoder_hidden: list[int] = bounded([512, 256], ge=1)  # E_P widths C → … → d_z [GUESS]
    generator_hidden: list[int] = bounded([256, 512], ge=1)  # G_P widths [z, tiled y] → … → C [GUESS]
    # BN in the hidden layers of E_P and G_P (E_P has BN in the spec; G_P the same, our choice)
    batch_norm: bool = True
    latent_disc_hidden: list[int] = bounded([64, 32, 16], ge=1)  # D_z widths, BN + ReLU (CAAE sizes [CODE])
    cond_disc_hidden: list[int] = bounded([256, 64], ge=1)  # D_p widths on [p, onehot(y)], LeakyReLU [GUESS]
    lambda_rec: float = bounded(1.0, ge=0)  # λ_rec, weight of the L1 fidelity to the teacher's p^τ [GUESS]
    lambda_acc: float = bounded(1.0, ge=0)  # λ_acc, weight of CE(z_P, y); sweep {0.1, 0.5, 1} [GUESS]
    # λ_z, weight of E_P's adversarial term vs D_z (CAAE keeps these small) [GUESS]
    lambda_z: float = bounded(0.01, ge=0)
    lambda_p: float = bounded(0.01, ge=0)  # λ_p, weight of G_P's adversarial term vs D_p [GUESS]
    epochs: int = bounded(30, ge=1)  # passes over the training split [GUESS]
    batch_size: int = bounded(128, ge=2)  # samples per Adam step (batch norm needs >= 2) [GUESS]
    lr: float = bounded(2e-4, gt=0)  # Adam learning rate for E_P+G_P, D_z and D_p (CAAE [CODE])
    beta1: float = bounded(0.5, ge=0, lt=1)  # Adam β1 (CAAE [CODE]); β2 is 0.999
    weight_decay: float = bounded(0.0, ge=0)  # L2 penalty (none in the CAAE)
    augment: bool = True  # augmented images with the teacher run online; false: teacher logits computed once
    seed: int = bounded(0, ge=0)  # added to base.seed for the professor's initialisation and batch order

    def optim_args(self) -> dict[str, Any]:
        """The OptimParams fields `fit` runs with: Adam at a constant lr, no Nesterov."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": "adam",
            "lr": self.lr,
            "momentum": self.beta1,
            "nesterov": False,
            "weight_decay": self.weight_decay,
            "schedule": "constant",
            "channels_last": False,
        }


def mlp(sizes: list[int], act: nn.Module, bn: bool, out: nn.Module | None = None) -> nn.Sequential:
    """Linear layers sizes[0] → … → sizes[-1]; hidden layers get [BN] + act, the last gets `out` (or
    nothing)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += ([nn.BatchNorm1d(b)] if bn else []) + [act]
    if out is not None:
        layers.append(out)
    return nn.Sequential(*layers)


class ProfessorNet(nn.Module):
    """E_P + G_P: teacher logits z_t (B, C) and labels y (B,) → refined logits z_P (B, C)."""

    def __init__(self, num_classes: int, p: ProfessorParams) -> None:
        super().__init__()
        self.num_classes, self.temperature = num_classes, p.temperature
        # r: copies of the one-hot label, like CAAE's tiling
        self.repeat = math.ceil(p.latent_dim / num_classes)
        lrelu = nn.LeakyReLU(0.2)
        self.encoder = mlp([num_classes, *p.encoder_hidden, p.latent_dim], lrelu, p.batch_norm, nn.Tanh())
        self.generator = mlp(
            [p.latent_dim + self.repeat * num_classes, *p.generator_hidden, num_classes], lrelu, p.batch_norm
        )

    def forward(self, z_t: torch.Tensor, y: torch.Tensor, with_latent: bool = False):
        latent = self.encoder(F.log_softmax(z_t.float() / self.temperature, dim=1))
        cond = F.one_hot(y, self.num_classes).to(latent.dtype).repeat(1, self.repeat)
        z_p = self.generator(torch.cat([latent, cond], dim=1))
        return (z_p, latent) if with_latent else z_p


class ProfessorSource(KnowledgeSource):
    """Online refined targets: teacher logits (K, B, C) from `teachers`, refined by professor k for teacher k.

    Needs the batch's labels (G_P is label-conditioned). Professors are frozen, in eval mode, and run in
    float32 outside autocast, so the result equals the cached targets on the same un-augmented batch.
    """

    def __init__(self, teachers: KnowledgeSource, professors: list[nn.Module]) -> None:
        super().__init__()
        if teachers.num_teachers != len(professors):
            raise KdpipeError(
                f"{teachers.num_teachers} teacher(s) but {len(professors)} professor(s); give one professor "
                "per teacher"
            )
        self.teachers, self.professors, self.num_teachers = (
            teachers,
            nn.ModuleList(professors),
            len(professors),
        )
        self.professors.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ProfessorSource:
        return super().train(False)  # always eval: BN running statistics, never batch statistics

    @torch.no_grad()
    def refine(self, batch, z_t: torch.Tensor) -> torch.Tensor:  # z_t (K, B, C) -> refined (K, B, C)
        with torch.autocast(z_t.device.type, enabled=False):
            return torch.stack([prof(z.float(), batch[1]).float() for prof, z in zip(self.professors, z_t)])

    def logits(self, batch) -> torch.Tensor:
        return self.refine(batch, self.teachers.logits(batch))


def targets_file(professor_path: str | Path) -> Path:
    """models/knowledge/professor/T.pt → models/knowledge/professor/T.targets.pt (the cached refined logits
    next to it)."""
    path = Path(professor_path)
    return path.with_name(f"{path.stem}.targets.pt")


def professor_from_artifact(art: dict, where: str | Path = "professor") -> ProfessorNet:
    """Rebuild a ProfessorNet (eval mode) from a loaded professor artifact."""
    net = ProfessorNet(int(art["num_classes"]), from_dict(ProfessorParams, art["params"], f"{where}:params"))
    checkpoint.load_state(net, art["state_dict"], where, "the professor network its params describe")
    return net.eval()


def load_professor(path: str | Path) -> tuple[ProfessorNet, dict]:
    """Rebuild a ProfessorNet (eval mode) from its artifact; returns (net, artifact without state_dict)."""
    art = checkpoint.load_artifact(path, ("professor",))
    return professor_from_artifact(art, path), {k: v for k, v in art.items() if k != "state_dict"}


def refined_source(teachers: KnowledgeSource, professors: Any) -> KnowledgeSource:
    """Refined targets for a student: cached (targets_file(path)["train"]) when the teacher source is cached,
    else online.

    `professors`: one per teacher (a bare one is allowed), each a professor artifact path or a ready module
    (tests).
    """
    items = list(professors) if isinstance(professors, (list, tuple)) else [professors]
    if isinstance(teachers, CachedLogits):
        if not all(isinstance(i, (str, Path)) for i in items):
            raise KdpipeError(
                "cached refined targets need professor artifact paths; pass assets['professor'] as paths"
            )
        tables = [checkpoint.load(targets_file(i), "cached refined targets")["train"] for i in items]
        want = (teachers.full, teachers.table.shape[2])  # refined targets cover the same rows as the logits
        if {t.shape for t in tables} != {want} or len(tables) != teachers.num_teachers:
            raise KdpipeError(
                "cached refined targets do not match the cached teacher logits; re-run refine-targets (dvc "
                "repro)"
            )
        return CachedLogits(torch.stack(tables), teachers.rows)  # train_subset: the student's rows
    nets = [load_professor(i)[0] if isinstance(i, (str, Path)) else i for i in items]
    return ProfessorSource(teachers, nets)


def target_metrics(
    z_p: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, temperature: float
) -> dict[str, float]:
    """Refined vs teacher targets on one split (label-conditioned: G_P sees y, so this is no classifier
    accuracy).

    teacher_top1 / refined_top1: how often argmax ranks the true class first; kl_refined_teacher:
    mean KL(p^τ(z_P) ‖ p^τ(z_t)) in nats; nontarget_corr: mean over samples of the Pearson correlation
    between the C − 1 non-target probabilities of p^τ(z_P) and p^τ(z_t) (how much inter-class structure
    survives; samples with a constant vector, where r is undefined, are left out).
    """
    lp, lt = F.log_softmax(z_p.float() / temperature, 1), F.log_softmax(z_t.float() / temperature, 1)
    keep = torch.ones_like(z_p, dtype=torch.bool).scatter_(1, y[:, None], False)
    a, b = lp.exp()[keep].view(len(y), -1), lt.exp()[keep].view(len(y), -1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1)[den > 0] / den[den > 0]
    return {
        "teacher_top1": (z_t.argmax(1) == y).float().mean().item(),
        "refined_top1": (z_p.argmax(1) == y).float().mean().item(),
        "kl_refined_teacher": (lp.exp() * (lp - lt)).sum(1).mean().item(),
        "nontarget_corr": r.mean().item() if len(r) else float("nan"),
    }


@torch.no_grad()
def refine_splits(source: ProfessorSource, loaders: dict[str, Any], num_classes: int) -> dict:
    """{split: (N, C)} refined float32 logits of non-shuffled, un-augmented `loaders` (data-set order), plus
    the teacher's logits under "teacher_<split>" and the labels under "y_<split>" (for the metrics; not stored
    in the targets file)."""
    source.eval()
    out = {}
    for split, loader in loaders.items():
        zts, zps, ys = (
            [torch.zeros(0, num_classes)],
            [torch.zeros(0, num_classes)],
            [torch.zeros(0, dtype=torch.long)],
        )
        for batch in loader:
            zt = source.teachers.logits(batch)  # (1, B, C)
            zts.append(zt[0].cpu())
            zps.append(source.refine(batch, zt)[0].cpu())
            ys.append(batch[1].cpu())
        out[f"teacher_{split}"], out[split], out[f"y_{split}"] = torch.cat(zts), torch.cat(zps), torch.cat(ys)
    return out
