"""Knowledge sources: where a method's teacher signals come from.

`OnlineTeachers` runs frozen teachers (eval mode, no_grad) on the batch the student sees; a teacher
trained at another input size or normalisation gets the batch through a `TeacherInput` adapter.
`CachedLogits` serves a (K, N, C) tensor written by a stage (teacher logits from infer-targets, or
professor-refined targets) by the batch's data-set index. Cached targets were computed on
un-augmented images; a stage only builds one for augmented training when the params say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import KdpipeError


class KnowledgeSource(nn.Module):
    """Base: `logits(batch) -> (K, B, C)`; `features(batch) -> (per-teacher stage features, logits)`."""

    num_teachers: int = 0

    def logits(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def features(self, batch) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        raise KdpipeError(
            f"{type(self).__name__} has no stage features; use targets: online for feature-based methods"
        )


# per-channel (mean, std) an input was normalised with
Norm = tuple[Sequence[float], Sequence[float]]
# (input side in px, or None = the student's; mean; std) a teacher was trained with
TeacherNorm = tuple[int | None, Sequence[float], Sequence[float]]


def teacher_norm(meta: dict) -> TeacherNorm:
    """A teacher's (input_size, mean, std) from its kdpipe artifact metadata."""
    return int(meta["input_size"]), list(meta["mean"]), list(meta["std"])


class TeacherInput(nn.Module):
    """Student batch normalised with the data's (mean, std) -> a teacher's input size and normalisation.

    x_t = normalise_t( resize( x·std_d + mean_d ) ): bilinear resize with antialiasing to `size` x `size`,
    then the teacher's mean/std. Per-channel affine maps commute with the resize (its weights sum to 1),
    so it is applied as one x·scale + shift after resizing; each step is skipped when it changes nothing.
    """

    def __init__(
        self, data_norm: Norm, size: int | None, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        dm, ds, tm, ts = (torch.tensor([float(v) for v in a]) for a in (*data_norm, mean, std))
        if not len(dm) == len(ds) == len(tm) == len(ts):
            raise KdpipeError(
                f"teacher normalisation has {len(tm)} channels but the data {len(dm)}; "
                "use a teacher trained on images with the data's channels"
            )
        scale, shift = ds / ts, (dm - tm) / ts
        self.size = size
        self.renorm = not (
            torch.allclose(scale, torch.ones_like(scale)) and torch.allclose(shift, torch.zeros_like(shift))
        )
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return x * self.scale + self.shift if self.renorm else x


class OnlineTeachers(KnowledgeSource):
    """Frozen teachers run on the fly; their parameters never train and BN statistics never move.

    `teacher_norms[k]` = (input size, mean, std) teacher k was trained with, or None when it takes the
    student's batch as it is; `data_norm` = the (mean, std) the student batch is normalised with.
    """

    def __init__(
        self,
        teachers: list[nn.Module],
        data_norm: Norm | None = None,
        teacher_norms: Sequence[TeacherNorm | None] | None = None,
    ) -> None:
        super().__init__()
        norms = list(teacher_norms) if teacher_norms is not None else [None] * len(teachers)
        if len(norms) != len(teachers):
            raise KdpipeError(
                f"{len(teachers)} teacher(s) but {len(norms)} teacher input normalisations; give one each"
            )
        if data_norm is None and any(n is not None for n in norms):
            raise KdpipeError("teacher input adapters need the data's (mean, std); pass data_norm")
        adapters = [TeacherInput(data_norm, *n) if n is not None else None for n in norms]
        # an adapter that neither resizes nor renormalises is dropped: no extra op per batch
        self.inputs = nn.ModuleList(
            [a if a is not None and (a.renorm or a.size is not None) else nn.Identity() for a in adapters]
        )
        self.teachers = nn.ModuleList(teachers)
        for p in self.teachers.parameters():
            p.requires_grad_(False)
        self.num_teachers = len(teachers)
        self.eval()

    def train(self, mode: bool = True) -> OnlineTeachers:
        return super().train(False)  # always eval

    @torch.no_grad()
    def logits(self, batch) -> torch.Tensor:
        x = batch[0]
        return torch.stack([t(a(x)) for t, a in zip(self.teachers, self.inputs)]).float()

    @torch.no_grad()
    def features(self, batch) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        x = batch[0]
        outs = [t.forward_stages(a(x)) for t, a in zip(self.teachers, self.inputs)]
        return [f for f, _ in outs], torch.stack([z for _, z in outs]).float()


class CachedLogits(KnowledgeSource):
    """Targets looked up by data-set index in a (K, N, C) table (train split indices).

    `rows`: when the model trains on part of the split (train_subset), the positions of its images in the
    table's N rows; the table keeps those rows, in that order, so the batch index finds them.
    """

    def __init__(self, table: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        super().__init__()
        if table.ndim != 3:
            raise KdpipeError(
                f"cached targets must have shape (K, N, C), got {tuple(table.shape)}; re-run infer-targets"
            )
        self.rows, self.full = rows, table.shape[1]  # full: N of the table as given (the whole split)
        self.register_buffer(
            "table", table.float() if rows is None else table[:, rows].float(), persistent=False
        )
        self.num_teachers = table.shape[0]

    def logits(self, batch) -> torch.Tensor:
        return self.table[:, batch[2]]


class CachedFeatures(KnowledgeSource):
    """Online teachers run once over the un-augmented training split; their stage features and logits are
    then looked up by the batch's data-set index, as `CachedLogits` does for logits.

    Without augmentation every epoch shows the teachers the same images, so one pass replaces a teacher
    forward per step (an online feature method then costs about what plain KD does). `teachers` stays for
    shape queries (stage_channels) and is never run again. Tensors live on the CPU; a batch's rows move to
    the batch's device.
    """

    def __init__(self, online: OnlineTeachers, loader, n: int) -> None:
        super().__init__()
        self.teachers = online.teachers
        self.num_teachers = online.num_teachers
        self.feats: list[list[torch.Tensor]] = []
        self.table = torch.empty(0)
        for batch in loader:
            feats, z = online.features(batch)
            idx = batch[2].cpu()
            if not self.feats:  # allocate on the first batch: shapes come from the teachers
                self.feats = [[f.new_empty((n, *f.shape[1:]), device="cpu") for f in fs] for fs in feats]
                self.table = z.new_empty((z.shape[0], n, z.shape[2]), device="cpu")
            for fs, out in zip(feats, self.feats):
                for f, o in zip(fs, out):
                    o[idx] = f.cpu()
            self.table[:, idx] = z.cpu()

    def logits(self, batch) -> torch.Tensor:
        return self.table[:, batch[2].cpu()].to(batch[0].device)

    def features(self, batch) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        idx, dev = batch[2].cpu(), batch[0].device
        return [[f[idx].to(dev) for f in fs] for fs in self.feats], self.logits(batch)
