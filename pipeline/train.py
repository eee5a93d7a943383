"""`fit`: the only training loop. Teachers, students, the professor, probes and factors all train here.

The method owns what one step computes (`method(batch, epoch)` -> dict with "loss" and, optionally,
"logits") and, optionally, what validation measures (`method.validate(loader, amp)`); the loop owns the
optimizer, schedule, device, mixed precision, DDP, logging, the NaN guard and resumption from `last.pt`.
Before each training step it sets `method.progress` = epochs done after that step (e + (i + 1)/steps),
so a method's schedule needs no step counter of its own and resumes exactly.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.errors import KdpipeError
from pipeline.params import OptimParams
from pipeline.runtime import CHANNELS_LAST_DEVICES, is_main
from pipeline.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    train: Iterable
    val: Iterable | None = None


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    final: dict = field(default_factory=dict)  # last epoch's metrics
    resumed_from: int = 0  # epochs restored from last.pt (0 = fresh start)


def lr_factor(p: OptimParams, epoch_float: float) -> float:
    """Multiplier of the peak lr at a fractional epoch: warm-up, then cosine / multistep / constant."""
    if p.warmup_epochs and epoch_float < p.warmup_epochs:
        return 0.1 + 0.9 * epoch_float / p.warmup_epochs
    if p.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch_float / max(p.epochs, 1), 1.0)))
    if p.schedule == "multistep":
        return p.gamma ** sum(1 for m in p.milestones if epoch_float >= m)
    return 1.0


def make_optimizer(params: list[nn.Parameter], p: OptimParams) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=p.lr,
            momentum=p.momentum,
            nesterov=p.nesterov and p.momentum > 0,
            weight_decay=p.weight_decay,
        )
    return torch.optim.Adam(params, lr=p.lr, betas=(p.momentum, 0.999), weight_decay=p.weight_decay)


def _amp_dtype(p: OptimParams, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or p.amp == "off":
        return None
    if p.amp == "fp16" or (p.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable, amp: torch.dtype | None = None) -> dict[str, float]:
    """Loss and top-1 of `model` on `loader` (eval mode; restores the previous mode)."""
    was = model.training
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    for x, y, _ in loader:
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            z = model(x).float()
        tot += torch.tensor(
            [F.cross_entropy(z, y, reduction="sum").item(), (z.argmax(1) == y).sum().item(), len(y)],
            dtype=torch.float64,
        )
    model.train(was)
    return {
        "val/loss": tot[0].item() / max(tot[2].item(), 1),
        "val/acc": tot[1].item() / max(tot[2].item(), 1),
    }


def _validate(
    method: nn.Module, student: nn.Module, loader: Iterable, amp: torch.dtype | None
) -> dict[str, float]:
    """The method's own validation if it has one, else loss and top-1 of the (unwrapped) student."""
    hook = getattr(method, "validate", None)
    return hook(loader, amp) if callable(hook) else validate(student, loader, amp)


def _state_keys(method: nn.Module) -> dict:
    # the knowledge source (teachers, cached tables) is rebuilt by the stage, never saved per epoch;
    # DDP's `module.` and torch.compile's `_orig_mod.` segments are dropped so any run can resume any other
    out = {}
    for k, v in method.state_dict().items():
        if not k.startswith("source."):
            out[k.replace(".module.", ".").replace("._orig_mod.", ".")] = v
    return out


def _save_state(path: Path, method, opt, sched, scaler, epoch: int, history: list, fingerprint: str) -> None:
    state = {
        "epoch": epoch,
        "fingerprint": fingerprint,
        "method": {k: v.detach().cpu() for k, v in _state_keys(method).items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "history": history,
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    checkpoint.save(state, path)


def _try_resume(path: Path | None, fingerprint: str, method, opt, sched, scaler) -> tuple[int, list]:
    if path is None or not path.is_file():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        log.warning("%s is unreadable; starting from scratch", path)
        return 0, []
    if state.get("fingerprint") != fingerprint:
        log.info("%s belongs to other params or data; starting from scratch", path)
        return 0, []
    missing = method.load_state_dict(state["method"], strict=False)
    if [k for k in missing.missing_keys if not k.startswith("source.")] or missing.unexpected_keys:
        log.warning("%s does not match this method's modules; starting from scratch", path)
        return 0, []
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["epoch"]), list(state["history"])


class _Progress:
    """A rich progress bar on a terminal, nothing otherwise (one log line per epoch is always written)."""

    def __init__(self, total: int, desc: str) -> None:
        self.bar = None
        if is_main() and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def _wrap_ddp(method: nn.Module, device: torch.device) -> None:
    """Wrap each trainable module of the method in DDP; teachers and sources stay unwrapped."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name in method.ddp_modules():
        mod = getattr(method, name)
        setattr(method, name, DDP(mod, device_ids=[device.index] if device.type == "cuda" else None))


def fit(
    method: nn.Module,
    loaders: Loaders,
    optim: OptimParams,
    tracker: Tracker | None = None,
    device: torch.device | str = "cpu",
    state_path: str | Path | None = None,
    fingerprint: str = "",
    desc: str = "train",
) -> FitResult:
    """Train `method` for `optim.epochs`, validating on `loaders.val`; resumes from `state_path` if it
    matches."""
    device = torch.device(device)
    tracker = tracker if (tracker is not None and is_main()) else NullTracker()
    state_path = Path(state_path) if state_path else None
    method.to(device)
    if device.type in CHANNELS_LAST_DEVICES and optim.channels_last:
        method.to(memory_format=torch.channels_last)
    opt = make_optimizer(method.trainable_parameters(), optim)
    steps = max(len(loaders.train), 1)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(optim, s / steps))
    amp = _amp_dtype(optim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    # resume before wrapping: DDP then broadcasts rank 0's restored weights to every rank
    start, history = _try_resume(state_path, fingerprint, method, opt, sched, scaler)
    if dist.is_initialized():
        _wrap_ddp(method, device)
    student = method.student
    if optim.compile:
        method.student = torch.compile(method.student)
    if start:
        log.info("%s: resuming from %s at epoch %d of %d", desc, state_path, start, optim.epochs)
    for h in history:
        tracker.log_epoch(int(h["epoch"]), {k: v for k, v in h.items() if k != "epoch"})
    # weights from disk: only the new head trains at first
    frozen, frozen_epochs = getattr(method, "frozen", ([], 0))
    for epoch in range(start, optim.epochs):
        method.train()
        if hasattr(loaders.train, "set_epoch"):
            loaders.train.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        seen, with_logits, t0, bar = (
            0,
            False,
            time.perf_counter(),
            _Progress(steps, f"{desc} epoch {epoch + 1}/{optim.epochs}"),
        )
        for i, batch in enumerate(loaders.train):
            method.progress = epoch + (i + 1) / steps  # epochs done after this step (schedules, warm-ups)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = method(batch, epoch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            if epoch < frozen_epochs:
                for q in frozen:  # no gradient, so SGD/Adam leave them (and their momentum/decay) untouched
                    q.grad = None
            scaler.step(opt)
            scaler.update()
            sched.step()
            n = len(batch[1])
            for k, v in out.items():  # accumulate on the device: no host sync per step
                if k != "logits" and torch.is_tensor(v) and v.ndim == 0:
                    sums[k] = sums.get(k, torch.zeros((), device=device)) + v.detach().float() * n
            if "logits" in out:  # knowledge jobs without class logits (the factor) log no train/acc
                correct += (out["logits"].detach().argmax(1) == batch[1]).sum()
                with_logits = True
            seen += n
            bar.advance()
        bar.close()
        keys = sorted(sums)
        totals = _reduce(
            torch.stack([sums[k] for k in keys] + [correct.float(), torch.tensor(float(seen), device=device)])
        )
        count = totals[-1].item()
        metrics = {f"train/{k}": totals[i].item() / count for i, k in enumerate(keys)}
        if not math.isfinite(metrics.get("train/loss", 0.0)):
            raise KdpipeError(
                f"{desc}: loss became {metrics['train/loss']} in epoch {epoch + 1}; lower the learning rate "
                "(optim.lr) or use amp: off"
            )
        if with_logits:
            metrics["train/acc"] = totals[-2].item() / count
        metrics["lr"] = opt.param_groups[0]["lr"]
        metrics["time/epoch_s"] = time.perf_counter() - t0
        metrics["time/images_per_s"] = count / metrics["time/epoch_s"]
        if loaders.val is not None and ((epoch + 1) % optim.eval_every == 0 or epoch + 1 == optim.epochs):
            metrics.update(_validate(method, student, loaders.val, amp))
        history.append({"epoch": epoch + 1, **metrics})
        tracker.log_epoch(epoch + 1, metrics)
        log.info(
            "%s epoch %d/%d %s",
            desc,
            epoch + 1,
            optim.epochs,
            " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.startswith("time/")),
        )
        if state_path is not None and is_main():
            _save_state(state_path, method, opt, sched, scaler, epoch + 1, history, fingerprint)
    method.student, method.progress = student, None
    if dist.is_initialized():
        for name in method.ddp_modules():
            mod = getattr(method, name)
            setattr(method, name, getattr(mod, "module", mod))
    final = dict(history[-1]) if history else {}
    if loaders.val is not None and not any(k.startswith("val/") for k in final):
        final.update(_validate(method, method.student, loaders.val, amp))
    return FitResult(history=history, final=final, resumed_from=start)
