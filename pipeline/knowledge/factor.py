"""IE-KD's teacher factor: a convolutional auto-encoder on a frozen teacher's last-stage feature.

Huang et al., CVPR 2021 ("Revisiting Knowledge Distillation: An Inheritance and Exploration
Framework"), stage 1 of the procedure: the teacher is frozen in eval mode and only an encoder E_T
(C_T -> k channels, k = 32) and a decoder (k -> C_T) train with the ℓ1 reconstruction loss
(pipeline/methods/factor_job.py). The encoder's output F_T = E_T(f_T) is the "factor" that `ie_kd`
students inherit from and explore away from. The artifact (kind "factor",
models/knowledge/factor/<teacher>.pt) keeps only the encoder; the decoder is not needed later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from pipeline import checkpoint
from pipeline.config import bounded
from pipeline.errors import KdpipeError


@dataclass(frozen=True)
class FactorParams:
    """The `factor` section of params.yaml (the pretrain-factor stage; the factor_job method's Params)."""

    # teachers that get a factor (dvc.yaml foreach); the ie_kd student's first teacher must be one
    teachers: list[str] = field(default_factory=list)
    channels: int = bounded(32, ge=1)  # factor channels k of the encoder output (official code: 32)
    # passes over the training split; official code 30, 3 keeps the CPU demo short
    epochs: int = bounded(3, ge=1)
    batch_size: int = bounded(128, ge=1)  # images per step (official code: 128)
    optimizer: Literal["sgd", "adam"] = "sgd"  # official code: SGD
    lr: float = bounded(0.1, gt=0)  # constant learning rate (official code: 0.1, no decay)
    momentum: float = bounded(0.9, ge=0, lt=1)  # SGD momentum (official code: 0.9, Nesterov)
    nesterov: bool = True  # Nesterov momentum (official code: yes)
    weight_decay: float = bounded(5e-4, ge=0)  # L2 penalty on the auto-encoder (official code: 5e-4)
    augment: bool = True  # random crop/flip of the training images (official code: yes)
    seed: int = bounded(0, ge=0)  # added to base.seed for the auto-encoder's initialisation and batch order

    def optim_args(self) -> dict[str, Any]:
        """The OptimParams fields `fit` trains with: the official constant schedule, no warm-up."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "schedule": "constant",
        }


class Coder(nn.Module):
    """LReLU(0.1) → [Conv3×3(cin→cin) → BN → LReLU] → [Conv3×3(cin→cout) → BN → LReLU]
    → [Conv3×3(cout→cout) → BN → LReLU].

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
    """encoder Coder(cin, k) + decoder Coder(k, cin) (plain convs, not transposed); forward -> (factor,
    reconstruction)."""

    def __init__(self, cin: int, channels: int = 32) -> None:
        super().__init__()
        self.encoder, self.decoder = Coder(cin, channels), Coder(channels, cin)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(f)
        return factor, self.decoder(factor)


def split_indices(
    channels: int, split: float, divide: str = "natural", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel indices (inheritance, exploration) of a C-channel feature.

    The inheritance part gets floor(C·split) channels (the official code's int(C/2) for 0.5);
    "natural" takes the first channels, "random" a fixed permutation drawn from `seed`.
    """
    n = int(channels * split)
    if not 0 < n < channels:
        raise KdpipeError(
            f"split {split} of {channels} channels leaves an empty inheritance or exploration part; use 0 < "
            "split < 1"
        )
    if divide == "natural":
        perm = torch.arange(channels)
    elif divide == "random":
        perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
    else:
        raise KdpipeError(f"divide: {divide!r} is not one of natural, random")
    return perm[:n].clone(), perm[n:].clone()


def factor_fields(encoder: Coder) -> dict[str, Any]:
    """The factor artifact's own fields (besides kind, name, params, metrics): sizes and the encoder
    weights."""
    return {
        "in_channels": int(encoder.cin),
        "channels": int(encoder.cout),
        "state_dict": checkpoint.clean_state_dict(encoder),
    }


def make_factor(
    encoder: Coder,
    *,
    teacher: str,
    teacher_sha256: str,
    params: dict | None = None,
    metrics: dict | None = None,
) -> dict:
    """A factor artifact (kind "factor") for `encoder`, weights_only-loadable."""
    f = factor_fields(encoder)
    return checkpoint.make_artifact(
        kind="factor",
        name=teacher,
        params=params or {},
        metrics=metrics or {},
        state_dict=f.pop("state_dict"),
        teacher=teacher,
        teacher_sha256=teacher_sha256,
        **f,
    )


def random_factor(in_channels: int, channels: int = 32, seed: int = 0) -> dict:
    """A factor artifact with a randomly initialised encoder (tests, registry smoke runs)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make_factor(Coder(in_channels, channels), teacher="random", teacher_sha256="")


def load_factor(src: str | Path | dict, teacher_sha256: str | None = None) -> tuple[Coder, dict]:
    """Frozen encoder E_T (eval mode, no grad) and the artifact without its state dict.

    `src` is a path written by pretrain-factor or an already loaded artifact; if `teacher_sha256` is
    given, a factor trained on another teacher file is refused (it would be meaningless).
    """
    where = src if not isinstance(src, dict) else "factor"
    art = src if isinstance(src, dict) else checkpoint.load_artifact(src, ("factor",))
    if not isinstance(art, dict) or art.get("kind") != "factor" or "state_dict" not in art:
        raise KdpipeError(f"{where}: not a kdpipe factor artifact; re-run pretrain-factor")
    if teacher_sha256 and art["teacher_sha256"] and art["teacher_sha256"] != teacher_sha256:
        raise KdpipeError(
            f"factor of teacher {art['teacher']!r} was trained on another version of it; re-run "
            "pretrain-factor (dvc repro)"
        )
    enc = Coder(int(art["in_channels"]), int(art["channels"]))
    checkpoint.load_state(enc, art["state_dict"], where, f"a Coder({art['in_channels']}, {art['channels']})")
    for q in enc.parameters():
        q.requires_grad_(False)
    return enc.eval(), {k: v for k, v in art.items() if k != "state_dict"}
