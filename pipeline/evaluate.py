"""Inference in data-set order, the classification metrics kdpipe reports and the models params lists."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import KdpipeError


@torch.no_grad()
def infer(model: nn.Module | Callable, loader: Iterable) -> torch.Tensor:
    """Logits for every item of a non-shuffled loader, in data-set order, as float32 on CPU."""
    if isinstance(model, nn.Module):
        was = model.training
        model.eval()
    if isinstance(model, nn.Module):
        model.to(memory_format=torch.channels_last)  # NHWC: 1.1-2x faster convs on CPU (oneDNN) and CUDA
    outs = [
        model(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x).float().cpu()
        for x, _, _ in loader
    ]
    if isinstance(model, nn.Module):
        model.train(was)
    return torch.cat(outs)


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width confidence bins."""
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, bins + 1)
    total = torch.zeros(())
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.float().mean() * ((pred[m] == y[m]).float().mean() - conf[m].mean()).abs()
    return float(total)


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, ece_bins: int = 15) -> dict[str, float]:
    """top-1, top-5 (or top-C for fewer classes), NLL and ECE of logits against labels."""
    probs = logits.softmax(1)
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return {
        "top1": (topk[:, 0] == y).float().mean().item(),
        "top5": (topk == y[:, None]).any(1).float().mean().item(),
        "nll": F.cross_entropy(logits, y).item(),
        "ece": ece(probs, y, ece_bins),
    }


def confusion_rows(logits: torch.Tensor, y: torch.Tensor, class_names: list[str]) -> list[dict]:
    """Per-item {actual, predicted} rows: the format of DVC's confusion-matrix plot template."""
    pred = logits.argmax(1)
    return [
        {"actual": class_names[a], "predicted": class_names[p]}
        for a, p in zip(y.tolist(), pred.tolist(), strict=True)
    ]


def evaluate_model(
    model: nn.Module,
    meta: dict,
    data: dict,
    batch_size: int = 512,
    ece_bins: int = 15,
    device: torch.device | str = "cpu",
) -> tuple[dict, torch.Tensor]:
    """Test-split metrics of one model on `device` plus facts for the report; returns (metrics, test
    logits)."""
    from pipeline.data.augment import augments_data
    from pipeline.data.loaders import make_loader
    from pipeline.models import num_parameters

    loader = make_loader(data, "test", batch_size=batch_size, device=device)
    logits = infer(model.to(device), loader)
    model.cpu()
    m = classification_metrics(logits, data["test_y"], ece_bins)
    n = num_parameters(model)
    spec = meta.get("params", {}) or {}
    sources = ", ".join(spec.get("teachers", [])) or "—"
    if spec.get("teachers") and spec.get("targets") == "cached":
        augmented = spec.get("augment") and augments_data(data)  # the loader only augments then
        sources += " (cached" + (", with augmentation" if augmented else "") + ")"
    val = (meta.get("metrics") or {}).get("val/acc")  # last epoch, from training: what sweeps select on
    m.update(
        val_top1=val,
        params=n,
        size_mb=4 * n / 2**20,
        kind=meta.get("kind", ""),
        method=spec.get("method", meta.get("method", "")),
        arch=meta.get("arch", ""),
        sources=sources,
    )
    return m, logits


# one evaluation: (name, a loader returning (model, artifact meta), facts added to its metrics)
Job = tuple[str, Callable[[], tuple[nn.Module, dict]], dict]


def model_jobs(entries: Sequence[Entry], paths: Sequence[Path]) -> list[Job]:
    """One evaluation per model params lists (`paths[i]`: the artifact of `entries[i]`)."""
    from pipeline.checkpoint import load_model

    return [
        (e.name, partial(load_model, path), {"section": e.section, "group": e.group})
        for e, path in zip(entries, paths, strict=True)
    ]


def evaluate_models(
    jobs: Iterable[Job], data: dict, batch_size: int, ece_bins: int, device: torch.device | str
) -> Iterator[tuple[str, dict, torch.Tensor]]:
    """(name, metrics, test logits) of each job in turn: one model in memory at a time."""
    for name, load, about in jobs:
        model, meta = load()
        metrics, logits = evaluate_model(model, meta, data, batch_size, ece_bins, device)
        yield name, metrics | about, logits


def require_artifacts(paths: Sequence[Path]) -> None:
    """One line naming the first model artifact that is missing, and how many are."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise KdpipeError(
            f"{missing[0]}: model artifact not found ({len(missing)} of the {len(paths)} "
            "models params lists are missing); train them first (dvc repro)"
        )


KINDS = {"teachers": "teacher", "patriarchs": "teacher", "students": "student", "generations": "student"}


@dataclass(frozen=True)
class Entry:
    """One model that params lists: where its artifact lives, its seed group and its paired baseline."""

    section: str  # params section: teachers | students | patriarchs | generations
    name: str  # resolved model name (one per seed)
    group: str  # the name before seed expansion; seeds of one group are summarized together
    baseline: str = ""  # resolved name of the same-seed baseline model, "" if none
    teachers: tuple[str, ...] = ()  # knowledge sources as params writes them: <section>/<name> or a teacher
    method: str = ""  # registry name of the training method
    arch: str = ""  # registry name of the architecture

    @property
    def kind(self) -> str:
        return KINDS[self.section]


def model_entries(params: Any) -> list[Entry]:
    """The models of params in section order: `pipeline.params.model_entries` when it exists (expanded
    per seed, with `group` and `baseline`), else each section's entries as written."""
    from pipeline import params as P

    expand = getattr(P, "model_entries", None)
    triples = (
        expand(params)
        if expand
        else [(s, n, spec) for s in P.MODEL_SECTIONS for n, spec in getattr(params, s).items()]
    )
    return [
        Entry(
            section,
            name,
            getattr(spec, "group", "") or seedless(name),
            getattr(spec, "baseline", "") or "",
            tuple(spec.teachers),
            spec.method,
            spec.arch,
        )
        for section, name, spec in triples
    ]


def seedless(name: str) -> str:
    """`kd_s2` -> `kd`: the group of a model named with a seed suffix (profiles name seeds so)."""
    match = re.fullmatch(r"(.+)_s\d+", name)
    return match.group(1) if match else name


ACCURACY_KEYS = ("top1", "top5", "ece", "nll", "val_top1")  # results/metrics/accuracy.json, per model
DIGITS = 4  # metrics are rounded so that `dvc exp show` columns stay narrow (0.8461, not 0.846099972)


def rounded(x: float | None) -> float | None:
    """A metric rounded to DIGITS; None for a missing or NaN value."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, DIGITS)


def accuracy_metrics(evaluation: dict[str, dict]) -> dict[str, dict]:
    """{model: {top1, top5, ece, nll, val_top1}}: the one metrics file evaluate declares (test split, and the
    last-epoch validation top-1 from training, on which a sweep picks its setting; None where unknown)."""
    out = {name: {k: rounded(m.get(k)) for k in ACCURACY_KEYS} for name, m in evaluation.items()}
    return {name: {k: v for k, v in m.items() if v is not None} for name, m in out.items()}
