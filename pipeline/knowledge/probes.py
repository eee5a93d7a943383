"""Linear classifier probes on frozen teachers' middle stages (GPAC's teacher choice per layer).

Alain & Bengio, "Understanding intermediate layers using linear classifier probes" (2016): a linear
classifier trained with CE on frozen features, no gradient into the backbone. One probe per (teacher k,
stage l): `GAP(F_k^l) -> Linear(C_k^l -> num_classes)` by default (GAP is cheap and resolution-free);
`pool: flatten` adaptive-average-pools to s×s and flattens (closer to Alain & Bengio, an ablation).
The probes_job method trains them all at once; each probe's top-1 is then measured on the VALIDATION
split (held out of the training split, never the test split), and k*(l) = argmax_k acc[k][l] (ties go
to the earlier teacher).

Layers: teachers may differ in depth and resolution, so probed stages are Python indices into each
network's stage list; the default is the last `min_k(#stages of teacher k)` stages ([-3, -2, -1] for
CIFAR ResNets). The gpac method indexes the student's stage list with the same indices.

The artifact (kind "probes", models/knowledge/probes.pt) holds teachers, layers, acc[k][l], choice[l],
pool, teacher_sha256 and the probes' weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.config import bounded
from pipeline.errors import KdpipeError


@dataclass(frozen=True)
class ProbesParams:
    """The `probes` section of params.yaml (the probe-teachers stage; the probes_job method's Params)."""

    # teachers to probe, in order (empty = every entry of params.teachers)
    teachers: list[str] = field(default_factory=list)
    # stage indices probed (Python style, -1 = last); empty = last min_k(#stages)
    stages: list[int] = field(default_factory=list)
    # probe input: global average pool, or adaptive pool to pool_size² and flatten
    pool: Literal["gap", "flatten"] = "gap"
    pool_size: int = bounded(4, ge=1)  # flatten: side s of the s×s pooled map (pixels after pooling)
    # probe training passes over the training split (CPU-sized; the paper's recipe: 30)
    epochs: int = bounded(3, ge=1)
    lr: float = bounded(0.1, gt=0)  # SGD peak learning rate, cosine schedule
    batch_size: int = bounded(128, ge=1)  # images per step
    weight_decay: float = bounded(5e-4, ge=0)  # L2 penalty on the probes (project default)
    augment: bool = False  # random crop/flip while training probes (off: a linear probe hardly overfits)

    def optim_args(self) -> dict[str, Any]:
        """OptimParams fields: SGD + cosine; validate (the probe ensemble) only after the last epoch."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "compile": False,
            "eval_every": max(self.epochs, 1),
        }


class LinearProbe(nn.Module):
    """pool(F) -> Linear; pool is GAP (C inputs) or adaptive-avg-pool to s×s then flatten (C·s² inputs)."""

    def __init__(self, channels: int, num_classes: int, pool: str = "gap", pool_size: int = 4) -> None:
        super().__init__()
        self.size = 1 if pool == "gap" else pool_size
        self.fc = nn.Linear(channels * self.size**2, num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(f.float(), self.size).flatten(1))


class ProbeNet(nn.Module):
    """All probes; `forward(x)` -> mean probe logits (B, C) for fit's validation, `every=True` -> (K·L, B, C).

    The teachers (an OnlineTeachers source) are held by reference, NOT as a sub-module, so state_dict,
    DDP and the optimizer see only the probes; the trainer registers them as its frozen `source`.
    """

    def __init__(self, source: Any, layers: list[int], num_classes: int, pool: str, pool_size: int) -> None:
        super().__init__()
        self.__dict__["source"] = source  # plain attribute: not registered
        self.layers = list(layers)
        self.probes = nn.ModuleList(
            nn.ModuleList(LinearProbe(t.stage_channels[l], num_classes, pool, pool_size) for l in layers)
            for t in source.teachers
        )

    def forward(self, x: torch.Tensor, every: bool = False) -> torch.Tensor:
        feats, _ = self.source.features((x,))  # no grad, eval mode
        z = torch.stack(
            [p(feats[k][l]) for k, row in enumerate(self.probes) for p, l in zip(row, self.layers)]
        )
        return z if every else z.mean(0)


def probe_layers(stage_counts: list[int], stages: list[int]) -> list[int]:
    """Stage indices to probe, checked against every teacher (default: the last min_k #stages, negative)."""
    n = min(stage_counts)
    layers = list(stages) or list(range(-n, 0))
    bad = [l for l in layers if not -n <= l < n]
    if bad:
        raise KdpipeError(
            f"probes.stages: {bad[0]} is out of range for a teacher with {n} stages; use indices in [-{n}, "
            f"{n - 1}]"
        )
    return layers


@torch.no_grad()
def probe_accuracy(net: ProbeNet, loader) -> list[list[float]]:
    """acc[k][l]: top-1 of every probe on `loader` (the validation split)."""
    net.eval()
    correct, count = None, 0
    for x, y, _ in loader:
        hit = (net(x, every=True).argmax(-1) == y).sum(1).double().cpu()
        correct = hit if correct is None else correct + hit
        count += len(y)
    if not count:
        raise KdpipeError(
            "the validation split is empty; probes are measured on it, so set data.val_size > 0"
        )
    acc = (correct / count).view(len(net.probes), len(net.layers))
    return [[float(a) for a in row] for row in acc]


def choose(acc: list[list[float]]) -> list[int]:
    """k*(l) = argmax_k acc[k][l] per layer; ties go to the earlier teacher."""
    return [max(range(len(acc)), key=lambda k: (acc[k][l], -k)) for l in range(len(acc[0]))]


def load_probes(obj: Any) -> dict:
    """A probe table from a probes artifact path or a dict (teachers, layers, acc, choice), checked for
    consistent shapes."""
    d = checkpoint.load_artifact(obj, ("probes",)) if isinstance(obj, (str, Path)) else obj
    keys = ("teachers", "layers", "acc", "choice")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise KdpipeError(
            f"{obj if isinstance(obj, (str, Path)) else 'probe asset'}: not a probe table (needs "
            f"{', '.join(keys)}); re-run probe-teachers"
        )
    K, L = len(d["teachers"]), len(d["layers"])
    if len(d["choice"]) != L or len(d["acc"]) != K or any(not 0 <= c < K for c in d["choice"]):
        raise KdpipeError(
            "probe table is inconsistent (choice/acc do not match teachers × layers); re-run probe-teachers"
        )
    return d


def layer_label(l: int) -> str:
    return f"stage[{l}]"


def probe_metrics(result: dict) -> dict:
    """metrics.json view: acc[teacher][stage] numbers, the chosen teacher index and name per stage."""
    labels = [layer_label(l) for l in result["layers"]]
    return {
        "acc": {n: dict(zip(labels, row)) for n, row in zip(result["teachers"], result["acc"])},
        "choice": dict(zip(labels, result["choice"])),
        "choice_teacher": {lab: result["teachers"][c] for lab, c in zip(labels, result["choice"])},
    }


def plot_heatmap(result: dict, path: str | Path) -> None:
    """teachers × layers heat map with each probe's accuracy written in its cell; chosen cells boxed."""
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,  # Agg canvas, no pyplot: no global backend state
    )
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    acc = torch.tensor(result["acc"]).numpy()
    K, L = acc.shape
    fig = Figure(figsize=(1.4 * L + 2.5, 0.6 * K + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(acc, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for k in range(K):
        for l in range(L):
            ax.text(
                l,
                k,
                f"{acc[k, l]:.3f}",
                ha="center",
                va="center",
                color="w" if acc[k, l] < 0.6 else "k",
                fontsize=9,
            )
    for l, k in enumerate(result["choice"]):
        ax.add_patch(Rectangle((l - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(L), [layer_label(l) for l in result["layers"]])
    ax.set_yticks(range(K), result["teachers"])
    ax.set_title("probe top-1 (validation); red = chosen teacher")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with checkpoint.atomic_path(path) as tmp:
        # no matplotlib version stamp: same bytes
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
