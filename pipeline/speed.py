"""Training-speed benchmark: `fit` against a plain PyTorch loop, and KD epochs against scratch epochs.

Every figure is a ratio of epochs timed in the same process, interleaved (A, B, A, B, ...) so drift
and machine noise hit both sides; the median over `reps` is reported. Epoch times vary ~13% between
identical runs on the 2-core machines, so single timings are never compared.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pipeline.data.loaders import DeviceLoader
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.params import OptimParams
from pipeline.sources import CachedLogits, OnlineTeachers
from pipeline.train import Loaders, fit

log = logging.getLogger(__name__)


def plain_epoch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float = 0.05
) -> float:
    """One epoch of the textbook loop: DataLoader over float tensors, SGD, CE. Returns seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    model.train()
    t0 = time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def fit_epoch(method, data: dict, batch_size: int, augment: bool = False) -> float:
    """One epoch of kdpipe's `fit` (no validation), in seconds of wall time for the whole call."""
    train = DeviceLoader(
        data["train_x"],
        data["train_y"],
        data["mean"],
        data["std"],
        batch_size=batch_size,
        shuffle=True,
        augment=augment,
        pad=data["pad"],
        flip=data["flip"],
    )
    t0 = time.perf_counter()
    # NCHW like the plain loop: this times the loop's own cost, not fit's NHWC speed-up (channels_last)
    optim = OptimParams(epochs=1, batch_size=batch_size, lr=0.05, channels_last=False)
    fit(method, Loaders(train, None), optim)
    return time.perf_counter() - t0


def _interleave(a: Callable[[], float], b: Callable[[], float], reps: int) -> dict:
    a(), b()  # warm-up: allocator, oneDNN kernels
    ta, tb = [], []
    for _ in range(reps):
        ta.append(a())
        tb.append(b())
    ratios = [x / y for x, y in zip(ta, tb)]
    return {
        "a_s": statistics.median(ta),
        "b_s": statistics.median(tb),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "reps": reps,
    }


def run_training_bench(data: dict, student: str, teacher: str, batch_size: int = 128, reps: int = 3) -> dict:
    """fit vs plain loop (same model, tensors, batch size); cached-KD and online-KD epochs vs scratch."""
    facts = (len(data["class_names"]), int(data["train_x"].shape[1]))
    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1)
    xf = (data["train_x"].float() / 255 - mean) / std
    n = len(data["train_y"])

    def method(name: str, source=None):
        torch.manual_seed(0)
        ctx = Context(
            student=create_model(student, *facts), source=source, num_classes=facts[0], in_channels=facts[1]
        )
        return build_method(name, ctx, REGISTRY[name].Params())

    out = {
        "images": n,
        "batch_size": batch_size,
        "student": student,
        "teacher": teacher,
        "threads": torch.get_num_threads(),
    }
    plain_model = create_model(student, *facts)
    r = _interleave(
        lambda: fit_epoch(method("ce"), data, batch_size),
        lambda: plain_epoch(plain_model, xf, data["train_y"], batch_size),
        reps,
    )
    out["fit_vs_plain"] = r | {"fit_images_per_s": n / r["a_s"], "plain_images_per_s": n / r["b_s"]}
    log.info("fit vs plain loop: %.3fx", r["ratio"])
    teachers = [create_model(teacher, *facts).eval()]
    with torch.no_grad():
        table = torch.cat(
            [teachers[0]((data["train_x"][i : i + 512].float() / 255 - mean) / std) for i in range(0, n, 512)]
        )
    r = _interleave(
        lambda: fit_epoch(method("kd", CachedLogits(table[None])), data, batch_size),
        lambda: fit_epoch(method("ce"), data, batch_size),
        reps,
    )
    out["kd_cached_vs_scratch"] = r
    log.info("KD (cached targets) vs scratch: %.3fx", r["ratio"])
    r = _interleave(
        lambda: fit_epoch(method("kd", OnlineTeachers(teachers)), data, batch_size),
        lambda: fit_epoch(method("ce"), data, batch_size),
        reps,
    )
    out["kd_online_vs_scratch"] = r
    log.info("KD (online teacher) vs scratch: %.3fx", r["ratio"])
    return out
