"""Ensembles of trained models: the mean of their softmax outputs, as one module and one graph.

The tolerant-teacher paper evaluates "model ensembles" of the generations (Yang et al., arXiv
1805.05551; methods.md §2.4 step 3): p_ens = (1/M)·Σ_m softmax(z_m). `EnsembleModel` returns
log p_ens, which are valid logits (softmax(log p) = p because Σ p = 1), so `evaluate.infer`,
`classification_metrics` (argmax, NLL, ECE) and the ONNX exporter treat it like any model, and an
export is a single self-contained graph holding every member.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.checkpoint import load_model, sha256
from pipeline.errors import KdpipeError

# Facts every member must share: the ensemble is one model with one interface.
SHARED = ("num_classes", "in_channels", "input_size", "class_names", "mean", "std")


def mean_prob_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """log((1/M)·Σ_m softmax(z_m)) for M member logits (each (B, C), or stacked (M, B, C)), stably in log
    space."""
    m = len(logits)  # a Python int for a list, so an exported graph holds log M as a constant
    return torch.logsumexp(torch.log_softmax(torch.stack(list(logits)).float(), dim=-1), dim=0) - math.log(m)


class EnsembleModel(nn.Module):
    """Members run on the same input; forward returns the log of their mean softmax probability."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise KdpipeError(
                "an ensemble needs at least one member; list model names in the ensemble's entry"
            )
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_prob_logits([m(x) for m in self.members])


def load_ensemble(paths: list[str | Path], name: str = "ensemble") -> tuple[EnsembleModel, dict]:
    """Load member artifacts into an `EnsembleModel` (eval mode) and describe it like an artifact.

    Members must share classes, channels, input size and normalisation (KdpipeError otherwise). The
    returned metadata has the artifact's keys (without state_dict) with kind "ensemble", the members'
    names, archs and SHA-256, so evaluate/export/report need no special case beyond the loader.
    """
    if not paths:
        raise KdpipeError(f"ensemble {name!r} has no members; list at least one model under it")
    models, metas = [], []
    for path in paths:
        model, meta = load_model(path)
        models.append(model)
        metas.append(meta)
    for path, meta in zip(paths[1:], metas[1:]):
        for key in SHARED:
            if meta[key] != metas[0][key]:
                raise KdpipeError(
                    f"ensemble {name!r}: {path} has {key}={meta[key]!r} but {paths[0]} has "
                    f"{metas[0][key]!r}; ensemble models trained on the same data"
                )
    members = [
        {"name": m["name"], "arch": m["arch"], "path": str(p), "sha256": sha256(p)}
        for p, m in zip(paths, metas)
    ]
    meta = {k: metas[0][k] for k in SHARED} | {
        "format": metas[0].get("format"),
        "kdpipe_version": metas[0].get("kdpipe_version"),
        "kind": "ensemble",
        "name": name,
        "arch": "ensemble(" + ",".join(m["arch"] for m in members) + ")",
        "arch_kwargs": {},
        "params": {"members": [m["name"] for m in members]},
        "metrics": {},
        "members": members,
    }
    return EnsembleModel(models).eval(), meta


def ensemble_jobs(ensembles: dict[str, list[str]], member: Callable[[str], Path]) -> list[tuple]:
    """One evaluation (pipeline.evaluate.Job) per ensemble params lists; `member` maps a member's params
    name to its artifact."""
    return [
        (
            name,
            partial(load_ensemble, [member(m) for m in members], name=name),
            {"kind": "ensemble", "method": "mean softmax", "sources": ", ".join(members)},
        )
        for name, members in ensembles.items()
    ]
