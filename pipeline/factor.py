"""IE-KD's teacher factor: a convolutional auto-encoder on a frozen teacher's last-stage feature.

Huang et al., CVPR 2021 ("Revisiting Knowledge Distillation: An Inheritance and Exploration
Framework"), stage 1 of the procedure (spec §4.4-4.5): the teacher is frozen in eval mode and only
an encoder E_T (C_T -> k channels, k = 32) and a decoder (k -> C_T) train with the ℓ1 reconstruction
loss. The encoder's output F_T = E_T(f_T) is the "factor" that `ie_kd` students inherit from and
explore away from. The factor artifact keeps only the encoder (the decoder is not needed later).

`FactorTrainer` follows the method contract so that `pipeline.train.fit`, the only training loop,
trains it (device, AMP, DDP, NaN guard, resume). `fit` validates and compiles `method.student`;
here that attribute is the *frozen teacher*: its validation accuracy is logged as a sanity check
(it must equal the teacher's own), and the loop's train/acc bookkeeping uses the teacher's logits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.losses.ie import reconstruction_l1
from pipeline.params import BaseParams, ModelParams, OptimParams, to_dict
from pipeline.runtime import is_main, prepare

log = logging.getLogger(__name__)
FACTOR_FORMAT = "kdpipe.factor/1"


@dataclass(frozen=True)
class FactorParams:
    """params.yaml section `factor` (the pretrain-factor stage)."""

    teachers: list[str] = field(default_factory=list)  # teachers that get a factor (dvc.yaml foreach); the ie_kd student's first teacher must be one
    channels: int = 32  # factor channels k of the encoder output (spec §4.4, official code: 32)
    epochs: int = 3  # passes over the training split; spec 30 (official code), 3 keeps the CPU demo short
    batch_size: int = 128  # images per step (official code: 128)
    optimizer: Literal["sgd", "adam"] = "sgd"  # official code: SGD
    lr: float = 0.1  # constant learning rate (official code: 0.1, no decay)
    momentum: float = 0.9  # SGD momentum (official code: 0.9, Nesterov)
    nesterov: bool = True  # Nesterov momentum (official code: yes)
    weight_decay: float = 5e-4  # L2 penalty on the auto-encoder (official code: 5e-4)
    augment: bool = True  # random crop/flip of the training images (official code: yes)
    seed: int = 0  # added to base.seed for the auto-encoder's initialisation and batch order

    def optim(self) -> OptimParams:
        """The OptimParams `fit` trains with: the spec's constant schedule, no warm-up."""
        return OptimParams(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay, schedule="constant")


class Coder(nn.Module):
    """LReLU(0.1) → [Conv3×3(cin→cin) → BN → LReLU] → [Conv3×3(cin→cout) → BN → LReLU] → [Conv3×3(cout→cout) → BN → LReLU].

    Stride 1, padding 1, no conv bias: spatial size is preserved (official model/auto_encoder.py).
    Init as in the official code: conv weights N(0, √(2/(9·C_out))), BN γ = 1, β = 0.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LeakyReLU(0.1)]
        for a, b in ((cin, cin), (cin, cout), (cout, cout)):
            conv = nn.Conv2d(a, b, 3, padding=1, bias=False)
            nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * b)) ** 0.5)
            layers += [conv, nn.BatchNorm2d(b), nn.LeakyReLU(0.1)]
        self.net = nn.Sequential(*layers)
        self.cin, self.cout = cin, cout

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class AutoEncoder(nn.Module):
    """encoder Coder(cin, k) + decoder Coder(k, cin) (plain convs, not transposed); forward -> (factor, reconstruction)."""

    def __init__(self, cin: int, channels: int = 32) -> None:
        super().__init__()
        self.encoder, self.decoder = Coder(cin, channels), Coder(channels, cin)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(f)
        return factor, self.decoder(factor)


def split_indices(channels: int, split: float, divide: str = "natural", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel indices (inheritance, exploration) of a C-channel feature.

    The inheritance part gets floor(C·split) channels (the official code's int(C/2) for 0.5);
    "natural" takes the first channels, "random" a fixed permutation drawn from `seed`.
    """
    n = int(channels * split)
    if not 0 < n < channels:
        raise KdpipeError(f"split {split} of {channels} channels leaves an empty inheritance or exploration part; use 0 < split < 1")
    if divide == "natural":
        perm = torch.arange(channels)
    elif divide == "random":
        perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
    else:
        raise KdpipeError(f"divide: {divide!r} is not one of natural, random")
    return perm[:n].clone(), perm[n:].clone()


class FactorTrainer(nn.Module):
    """Trains E_T + decoder on the frozen teacher's last-stage feature with L_rec (ℓ1 mean).

    forward -> {"loss": L_rec, "logits": teacher logits (loop bookkeeping only), "rec": L_rec}.
    It implements the method contract (pipeline.methods) without being a registered `Method`:
    it is no student method, and importing pipeline.methods here would be circular (ie_kd imports
    this module).
    """

    def __init__(self, teacher: nn.Module, channels: int = 32) -> None:
        super().__init__()
        self.student = teacher  # `fit` validates/compiles `method.student`: here the frozen teacher
        for q in teacher.parameters():
            q.requires_grad_(False)  # only the auto-encoder trains (and only it is in DDP)
        self.ae = AutoEncoder(int(teacher.stage_channels[-1]), channels)
        self.train()

    def train(self, mode: bool = True) -> "FactorTrainer":
        super().train(mode)
        self.student.eval()  # the teacher's BN statistics never move
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.ae.parameters())

    def ddp_modules(self) -> list[str]:
        return ["ae"]  # the frozen teacher is never wrapped

    def exported(self) -> dict[str, nn.Module]:
        return {}  # nothing becomes a model artifact; the encoder is written by save_factor

    def forward(self, batch, epoch: int) -> dict:
        with torch.no_grad():
            feats, z = self.student(batch[0], stages=True)
        f = feats[-1].detach()
        rec = reconstruction_l1(f, self.ae(f)[1])
        return {"loss": rec, "logits": z, "rec": rec}


def make_factor(encoder: Coder, *, teacher: str, teacher_sha256: str, params: dict | None = None,
                metrics: dict | None = None) -> dict:
    """The factor artifact: encoder state dict + sizes + teacher identity, weights_only-loadable."""
    return {"format": FACTOR_FORMAT, "teacher": teacher, "teacher_sha256": teacher_sha256,
            "in_channels": int(encoder.cin), "channels": int(encoder.cout), "state_dict": checkpoint.clean_state_dict(encoder),
            "params": params or {}, "metrics": {k: float(v) for k, v in (metrics or {}).items()}}


def random_factor(in_channels: int, channels: int = 32, seed: int = 0) -> dict:
    """A factor artifact with a randomly initialised encoder (tests, registry smoke runs)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make_factor(Coder(in_channels, channels), teacher="random", teacher_sha256="")


def save_factor(art: dict, path: str | Path) -> None:
    checkpoint.save(art, path)


def load_factor(src: str | Path | dict, teacher_sha256: str | None = None) -> tuple[Coder, dict]:
    """Frozen encoder E_T (eval mode, no grad) and the artifact without its state dict.

    `src` is a path written by pretrain-factor or an already loaded dict; if `teacher_sha256` is
    given, a factor trained on another teacher file is refused (it would be meaningless).
    """
    art = src if isinstance(src, dict) else checkpoint.load(src, "IE-KD factor")
    if not isinstance(art, dict) or art.get("format") != FACTOR_FORMAT:
        raise KdpipeError(f"{src if not isinstance(src, dict) else 'factor'}: not a kdpipe factor ({FACTOR_FORMAT}); re-run pretrain-factor")
    if teacher_sha256 and art["teacher_sha256"] and art["teacher_sha256"] != teacher_sha256:
        raise KdpipeError(f"factor of teacher {art['teacher']!r} was trained on another version of it; re-run pretrain-factor (dvc repro)")
    enc = Coder(int(art["in_channels"]), int(art["channels"]))
    enc.load_state_dict(art["state_dict"])
    for q in enc.parameters():
        q.requires_grad_(False)
    return enc.eval(), {k: v for k, v in art.items() if k != "state_dict"}


@torch.no_grad()
def reconstruction_loss(trainer: FactorTrainer, loader: Any) -> float:
    """Mean L_rec over a loader (eval mode), weighted by batch size."""
    was = trainer.training
    trainer.eval()
    tot, n = 0.0, 0
    for batch in loader:
        tot += trainer(batch, 0)["rec"].item() * len(batch[1])
        n += len(batch[1])
    trainer.train(was)
    return tot / max(n, 1)


def pretrain_factor(name: str, teacher_path: Path, data: dict, fp: FactorParams, base: BaseParams, out: Path,
                    state: Path | None = None) -> dict[str, float]:
    """Train the factor auto-encoder of teacher `name` with `fit`, write the encoder to `out`, return metrics."""
    from pipeline.runner import check_teacher, fingerprint, make_loaders  # late: runner imports the methods
    from pipeline.train import fit

    seed = base.seed + fp.seed
    device, rank, world = prepare(base.device, base.threads, seed)
    teacher, art = checkpoint.load_model(teacher_path)
    check_teacher(art, data, name)
    sha = checkpoint.sha256(teacher_path)
    trainer = FactorTrainer(teacher, fp.channels)
    optim = fp.optim()
    loaders = make_loaders(data, ModelParams(arch=art["arch"], augment=fp.augment, optim=optim), seed, device, rank, world)
    own = {k: v for k, v in to_dict(fp).items() if k != "teachers"}  # adding a teacher must not restart the others
    fp_hash = fingerprint(own, base.seed, sha, data["train_y"].shape[0], data["source"])
    res = fit(trainer, loaders, optim, None, device, state, fp_hash, desc=f"factor {name}")
    metrics = {"train/rec": res.final.get("train/rec", float("nan")), "teacher_val_acc": res.final.get("val/acc", float("nan")),
               "epochs": float(optim.epochs)}
    if loaders.val is not None:
        metrics["val/rec"] = reconstruction_loss(trainer, loaders.val)
    if is_main():
        save_factor(make_factor(trainer.ae.encoder, teacher=name, teacher_sha256=sha, params=own, metrics=metrics), out)
    log.info("factor %s: %s", name, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics
