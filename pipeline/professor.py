"""Professor model: a conditional adversarial autoencoder (CAAE) that refines a frozen teacher's soft targets.

Bang, Lee, Shim, "Distilling from professors", Information Sciences 576 (2021). Only the abstract was
available; every network below is the [GUESS] design of shared/reference/methods.md §1.3, each part
mirroring the CAAE of Zhang et al. (CVPR 2017): teacher soft target ↔ image, ground-truth class ↔ age
label, latent z ↔ instance-specific inter-class structure. Losses: pipeline/losses/professor.py.

Training through the one loop (`pipeline.train.fit`, one optimizer, one loss): `ProfessorTrainer.forward`
returns  L = L_prof(E_P, G_P) + L_Dz(D_z) + L_Dp(D_p)  built so that each part reaches only its own
parameters: the discriminator losses see *detached* latents/targets, and the generator's adversarial
terms run the discriminators through `frozen_call` (torch.func.functional_call with detached parameters),
so gradients flow through D into E_P/G_P but never into D's parameters. Adam normalises each parameter
on its own, so one Adam over the three disjoint groups equals the CAAE's three Adams (same lr, β) with
simultaneous updates. The refined target is label-conditioned, so `fit` gets no val loader; `train_professor`
computes the professor's metrics on the un-augmented train and val splits afterwards.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.data import DeviceLoader
from pipeline.errors import KdpipeError
from pipeline.evaluate import infer
from pipeline.losses import professor as L
from pipeline.methods import Context, Method
from pipeline.params import OptimParams, from_dict, to_dict
from pipeline.runner import data_facts, fingerprint
from pipeline.runtime import prepare
from pipeline.sources import CachedLogits, KnowledgeSource, OnlineTeachers
from pipeline.train import Loaders, fit

log = logging.getLogger(__name__)
FORMAT = "kdpipe.professor/1"


@dataclass(frozen=True)
class ProfessorParams:
    """The `professor` section of params.yaml (parsed by the refine-targets stage)."""

    teachers: list[str] = field(default_factory=list)  # teachers that get a professor (dvc.yaml `foreach`); names as in distill
    temperature: float = 4.0  # τ of p^τ = softmax(z/τ): encoder input log p^τ(z_t), L_rec, D_p inputs [GUESS §1.3]
    latent_dim: int = 64  # d_z, size of E_P's tanh latent and of the U[−1,1] prior [GUESS §1.3]
    encoder_hidden: list[int] = field(default_factory=lambda: [512, 256])  # E_P widths C → … → d_z [GUESS §1.3]
    generator_hidden: list[int] = field(default_factory=lambda: [256, 512])  # G_P widths [z, tiled y] → … → C [GUESS §1.3]
    batch_norm: bool = True  # BN in the hidden layers of E_P and G_P (spec: E_P has BN; G_P the same, our choice)
    latent_disc_hidden: list[int] = field(default_factory=lambda: [64, 32, 16])  # D_z widths, BN + ReLU (CAAE sizes [CODE])
    cond_disc_hidden: list[int] = field(default_factory=lambda: [256, 64])  # D_p widths on [p, onehot(y)], LeakyReLU [GUESS]
    lambda_rec: float = 1.0  # λ_rec, weight of the L1 fidelity to the teacher's p^τ [GUESS §1.4]
    lambda_acc: float = 1.0  # λ_acc, weight of CE(z_P, y); the spec suggests sweeping {0.1, 0.5, 1} [GUESS §1.4]
    lambda_z: float = 0.01  # λ_z, weight of E_P's adversarial term vs D_z (CAAE keeps these small) [GUESS §1.4]
    lambda_p: float = 0.01  # λ_p, weight of G_P's adversarial term vs D_p [GUESS §1.4]
    epochs: int = 30  # passes over the training split [GUESS §1.4]
    batch_size: int = 128  # samples per Adam step [GUESS §1.4]
    lr: float = 2e-4  # Adam learning rate for E_P+G_P, D_z and D_p (CAAE [CODE])
    beta1: float = 0.5  # Adam β1 (CAAE [CODE]); β2 is 0.999
    weight_decay: float = 0.0  # L2 penalty (none in the CAAE)
    augment: bool = True  # augmented images with the teacher run online (spec §1.4); false: teacher logits computed once
    seed: int = 0  # added to base.seed for the professor's initialisation and batch order

    def optim(self) -> OptimParams:
        """The OptimParams `fit` runs with: Adam at a constant lr, no Nesterov."""
        return OptimParams(epochs=self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr, momentum=self.beta1,
                           nesterov=False, weight_decay=self.weight_decay, schedule="constant", channels_last=False)


def _mlp(sizes: list[int], act: nn.Module, bn: bool, out: nn.Module | None = None) -> nn.Sequential:
    """Linear layers sizes[0] → … → sizes[-1]; hidden layers get [BN] + act, the last gets `out` (or nothing)."""
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
        self.repeat = math.ceil(p.latent_dim / num_classes)  # r: copies of the one-hot label, like CAAE's tiling
        lrelu = nn.LeakyReLU(0.2)
        self.encoder = _mlp([num_classes, *p.encoder_hidden, p.latent_dim], lrelu, p.batch_norm, nn.Tanh())
        self.generator = _mlp([p.latent_dim + self.repeat * num_classes, *p.generator_hidden, num_classes], lrelu, p.batch_norm)

    def forward(self, z_t: torch.Tensor, y: torch.Tensor, with_latent: bool = False):
        latent = self.encoder(F.log_softmax(z_t.float() / self.temperature, dim=1))
        cond = F.one_hot(y, self.num_classes).to(latent.dtype).repeat(1, self.repeat)
        z_p = self.generator(torch.cat([latent, cond], dim=1))
        return (z_p, latent) if with_latent else z_p


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Run `module` with detached parameters: gradients reach the inputs, never its parameters.

    Buffers are cloned, so a train-mode BatchNorm uses batch statistics but its running statistics
    are updated only by the discriminator's own pass. A DDP wrapper is looked through.
    """
    m = getattr(module, "module", module)
    state = {n: t.detach() for n, t in m.named_parameters()} | {n: t.clone() for n, t in m.named_buffers()}
    return torch.func.functional_call(m, state, args)


class ProfessorTrainer(Method):
    """The professor's training step in the method contract; `student` is the ProfessorNet (E_P + G_P).

    Not registered: it is trained by the refine-targets stage, never named in a student block.
    `source` gives the frozen teacher's logits (K = 1) for the batch; `logits` are the refined logits,
    so fit's train/acc is the refined-target top-1 on the augmented training batches.
    """

    name = "professor-trainer"
    needs_teachers = True

    def __init__(self, ctx: Context, p: ProfessorParams) -> None:
        super().__init__(ctx, p)
        c = ctx.num_classes
        self.d_z = _mlp([p.latent_dim, *p.latent_disc_hidden, 1], nn.ReLU(), True)
        self.d_p = _mlp([2 * c, *p.cond_disc_hidden, 1], nn.LeakyReLU(0.2), False)

    def forward(self, batch, epoch: int) -> dict:
        p, y = self.p, batch[1]
        z_t = self.source.logits(batch)[0].float()  # (B, C), no grad
        z_p, latent = self.student(z_t, y, with_latent=True)
        onehot = F.one_hot(y, z_t.shape[1]).float()
        p_t, p_p = F.softmax(z_t / p.temperature, dim=1), F.softmax(z_p.float() / p.temperature, dim=1)
        rec, acc = L.rec_loss(z_p.float(), z_t, p.temperature), L.acc_loss(z_p.float(), y)
        adv_z = L.adv_gen_loss(frozen_call(self.d_z, latent).float())  # reaches E_P only
        adv_p = L.adv_gen_loss(frozen_call(self.d_p, torch.cat([p_p, onehot], 1)).float())  # reaches E_P and G_P
        # discriminators: one pass each on [real; detached fake], so they reach only their own parameters
        prior = torch.rand_like(latent) * 2 - 1  # u ~ U[−1, 1]^d_z
        dz = self.d_z(torch.cat([prior, latent.detach()])).float()
        disc_z = L.adv_disc_loss(dz[: len(y)], dz[len(y):])
        ok = z_t.argmax(1) == y  # "real" targets: the teacher's correctly classified samples
        dp = self.d_p(torch.cat([torch.cat([p_t[ok], onehot[ok]], 1), torch.cat([p_p.detach(), onehot], 1)])).float()
        disc_p = L.adv_disc_loss(dp[: int(ok.sum())], dp[int(ok.sum()):])
        gen = p.lambda_rec * rec + p.lambda_acc * acc + p.lambda_z * adv_z + p.lambda_p * adv_p
        return {"loss": gen + disc_z + disc_p, "logits": z_p, "rec": rec, "acc_ce": acc, "adv_z": adv_z, "adv_p": adv_p,
                "disc_z": disc_z, "disc_p": disc_p}


class ProfessorSource(KnowledgeSource):
    """Online refined targets: teacher logits (K, B, C) from `teachers`, refined by professor k for teacher k.

    Needs the batch's labels (G_P is label-conditioned). Professors are frozen, in eval mode, and run in
    float32 outside autocast, so the result equals the cached targets on the same un-augmented batch.
    """

    def __init__(self, teachers: KnowledgeSource, professors: list[nn.Module]) -> None:
        super().__init__()
        if teachers.num_teachers != len(professors):
            raise KdpipeError(f"{teachers.num_teachers} teacher(s) but {len(professors)} professor(s); give one professor per teacher")
        self.teachers, self.professors, self.num_teachers = teachers, nn.ModuleList(professors), len(professors)
        self.professors.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ProfessorSource":
        return super().train(False)  # always eval: BN running statistics, never batch statistics

    @torch.no_grad()
    def refine(self, batch, z_t: torch.Tensor) -> torch.Tensor:  # z_t (K, B, C) -> refined (K, B, C)
        with torch.autocast(z_t.device.type, enabled=False):
            return torch.stack([prof(z.float(), batch[1]).float() for prof, z in zip(self.professors, z_t)])

    def logits(self, batch) -> torch.Tensor:
        return self.refine(batch, self.teachers.logits(batch))


def targets_file(professor_path: str | Path) -> Path:
    """models/knowledge/professor/T.pt → models/knowledge/professor/T.targets.pt (the cached refined logits next to it)."""
    path = Path(professor_path)
    return path.with_name(f"{path.stem}.targets.pt")


def save_professor(net: ProfessorNet, p: ProfessorParams, path: str | Path, **facts: Any) -> None:
    """Write the professor artifact (weights_only-loadable: tensors and plain values only)."""
    art = {"format": FORMAT, "kind": "professor", "num_classes": net.num_classes, "params": to_dict(p),
           "state_dict": checkpoint.clean_state_dict(net), **facts}
    checkpoint.save(art, path)


def load_professor(path: str | Path) -> tuple[ProfessorNet, dict]:
    """Rebuild a ProfessorNet (eval mode) from its artifact; returns (net, artifact without state_dict)."""
    art = checkpoint.load(path, "professor artifact")
    if not isinstance(art, dict) or art.get("format") != FORMAT:
        raise KdpipeError(f"{path}: not a professor artifact (no '{FORMAT}' tag); re-run refine-targets")
    net = ProfessorNet(art["num_classes"], from_dict(ProfessorParams, art["params"], f"{path}:params"))
    net.load_state_dict(art["state_dict"])
    return net.eval(), {k: v for k, v in art.items() if k != "state_dict"}


def refined_source(teachers: KnowledgeSource, professors: Any) -> KnowledgeSource:
    """Refined targets for a student: cached (targets_file(path)["train"]) when the teacher source is cached, else online.

    `professors`: one per teacher (a bare one is allowed), each a professor artifact path or a ready module (tests).
    """
    items = list(professors) if isinstance(professors, (list, tuple)) else [professors]
    if isinstance(teachers, CachedLogits):
        if not all(isinstance(i, (str, Path)) for i in items):
            raise KdpipeError("cached refined targets need professor artifact paths; pass assets['professor'] as paths")
        tables = [checkpoint.load(targets_file(i), "cached refined targets")["train"] for i in items]
        if any(t.shape != teachers.table.shape[1:] for t in tables) or len(tables) != teachers.num_teachers:
            raise KdpipeError("cached refined targets do not match the cached teacher logits; re-run refine-targets (dvc repro)")
        return CachedLogits(torch.stack(tables))
    nets = [load_professor(i)[0] if isinstance(i, (str, Path)) else i for i in items]
    return ProfessorSource(teachers, nets)


def target_metrics(z_p: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, temperature: float) -> dict[str, float]:
    """Refined vs teacher targets on one split (label-conditioned: G_P sees y, so this is no classifier accuracy).

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
    return {"teacher_top1": (z_t.argmax(1) == y).float().mean().item(), "refined_top1": (z_p.argmax(1) == y).float().mean().item(),
            "kl_refined_teacher": (lp.exp() * (lp - lt)).sum(1).mean().item(), "nontarget_corr": r.mean().item() if len(r) else float("nan")}


@torch.no_grad()
def refine_splits(source: ProfessorSource, data: dict, device: torch.device | str = "cpu", batch_size: int = 512) -> dict:
    """{"train": (N, C), "val": (N_val, C)} refined float32 logits on un-augmented images in data-set order, plus
    the teacher's logits under "teacher_train"/"teacher_val" (for the metrics; not stored in the targets file)."""
    source.to(device).eval()
    out, c = {}, len(data["class_names"])
    for split in ("train", "val"):
        loader = DeviceLoader(data[f"{split}_x"], data[f"{split}_y"], data["mean"], data["std"], batch_size=batch_size,
                              device=device, shuffle=False, augment=False)
        zts, zps = [torch.zeros(0, c)], [torch.zeros(0, c)]
        for batch in loader:
            zt = source.teachers.logits(batch)  # (1, B, C)
            zts.append(zt[0].cpu())
            zps.append(source.refine(batch, zt)[0].cpu())
        out[f"teacher_{split}"], out[split] = torch.cat(zts), torch.cat(zps)
    return out


@dataclass
class ProfessorPaths:  # where refine-targets writes (chosen by the stage)
    artifact: Path  # the professor artifact, models/knowledge/professor/<teacher>.pt
    targets: Path  # cached refined logits, models/knowledge/professor/<teacher>.targets.pt
    state: Path  # resumable training state (last.pt) in a persist: true output
    metrics_dir: Path  # dvclive directory: metrics.json + per-epoch plots


def train_professor(teacher_name: str, teacher: nn.Module, teacher_sha: str, data: dict, p: ProfessorParams, base: Any,
                    paths: ProfessorPaths, tracker_factory: Any) -> dict[str, Any]:
    """Train the professor on the frozen teacher with `fit`, then write artifact, cached targets and metrics."""
    n = len(data["train_y"])
    if n % p.batch_size == 1:
        raise KdpipeError(f"professor.batch_size={p.batch_size} leaves a last batch of 1 sample, which batch norm cannot train on; change it")
    device = prepare(base.device, base.threads, base.seed + p.seed)[0]
    facts, teachers = data_facts(data), OnlineTeachers([teacher]).to(device)
    net, split = ProfessorNet(facts["num_classes"], p), (data["train_x"], data["train_y"], data["mean"], data["std"])
    # without augmentation every epoch sees the same images: run the teacher once and look its logits up by idx
    source = teachers if p.augment else CachedLogits(infer(teacher, DeviceLoader(*split, batch_size=512, device=device))[None])
    trainer = ProfessorTrainer(Context(student=net, source=source, epochs=p.epochs, **facts), p)
    train = DeviceLoader(*split, batch_size=p.batch_size, device=device, shuffle=True, augment=p.augment, pad=data["pad"],
                         flip=data["flip"], seed=base.seed + p.seed)
    fp = fingerprint(to_dict(p) | {"teachers": None}, base.seed, teacher_sha, n, data["source"])  # the list is not this run
    tracker = tracker_factory(paths.metrics_dir)
    res = fit(trainer, Loaders(train, None), p.optim(), tracker, device, paths.state, fp, desc=f"professor {teacher_name}")
    tables = refine_splits(ProfessorSource(teachers, [net]), data, device)
    summary: dict[str, Any] = {"step": p.epochs, "resumed_from_epoch": res.resumed_from,
                               "professor_params": sum(q.numel() for q in net.parameters()),
                               "train": {k.removeprefix("train/"): v for k, v in res.final.items() if k.startswith("train/")}}
    for s in ("train", "val"):
        if len(data[f"{s}_y"]):
            summary.setdefault(s, {}).update(target_metrics(tables[s], tables[f"teacher_{s}"], data[f"{s}_y"], p.temperature))
    flat = {f"{s}/{k}": v for s in ("train", "val") for k, v in summary.get(s, {}).items()}
    save_professor(net.cpu(), p, paths.artifact, name=teacher_name, teacher=teacher_name, teacher_sha256=teacher_sha,
                   class_names=list(data["class_names"]), metrics=flat)
    checkpoint.save({"train": tables["train"], "val": tables["val"], "teacher": teacher_name, "teacher_sha256": teacher_sha,
                     "professor_sha256": checkpoint.sha256(paths.artifact), "augmented": False}, paths.targets)
    tracker.close({})  # dvclive writes metrics.json in place; rewrite it atomically with the full summary
    checkpoint.atomic_write_text(paths.metrics_dir / "metrics.json", json.dumps(summary, indent=4) + "\n")
    log.info("professor %s: refined top-1 %s vs teacher %s (val)", teacher_name, summary.get("val", {}).get("refined_top1"),
             summary.get("val", {}).get("teacher_top1"))
    return summary
