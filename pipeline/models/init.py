"""Start a model from weights on disk (`init:` block of a model's params).

`apply_init(model, InitParams(path=...), arch)` loads, with torch.load(weights_only=True):
- a plain state_dict (torchvision/timm style `.pth`), keys mapped onto kdpipe's module names
  (torchvision adapters keep the torchvision net as `net.`; DDP `module.` prefixes are dropped);
- a kdpipe model artifact (format "kdpipe.model/1"), refused if it was trained for another arch;
- a checkpoint dict holding the state dict under "state_dict" or "model".
A stem conv built for another channel count (in_channels != 3) gets the file's RGB kernels summed
(1 channel) or cycled. The classifier head (the model's last nn.Linear) is the only layer allowed to
differ: with `head: auto` it keeps its fresh init when its shape differs (one log line names it), `replace`
never loads it, `keep` requires it to match. Everything else must match unless `strict: false`,
which loads what matches and reports the rest. Every refusal is one KdpipeError line naming the file.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.config import bounded
from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)

_DROP = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers
_MIN_MATCH = 0.5  # fewer matching backbone tensors than this share means the file is another architecture


@dataclass(frozen=True)
class InitParams:
    path: str  # weights file: a state_dict .pth, a kdpipe model artifact, or a dict with "state_dict"/"model"
    strict: bool = True  # every tensor but the head must match; false: load what matches and report the rest
    head: Literal["auto", "keep", "replace"] = "auto"  # auto: fresh head when its shape differs
    freeze_epochs: int = bounded(0, ge=0)  # train only the head for the first N epochs (0 = never freeze)


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the classifier head: the last nn.Linear in module order."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise KdpipeError(f"{type(model).__name__} has no nn.Linear classifier head; init.head cannot apply")
    return linears[-1]


def head_parameters(model: nn.Module) -> list[str]:
    """Names (as in `model.named_parameters()`) of the classifier head's parameters."""
    name, head = head_module(model)
    return [f"{name}.{k}" for k, _ in head.named_parameters()]


def _read(path: Path) -> object:
    if not path.is_file():
        raise KdpipeError(f"{path}: init weights file not found; fix init.path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise KdpipeError(
                f"{path}: holds pickled code or objects that weights_only loading refuses; "
                "re-save it as a plain state_dict (torch.save(model.state_dict(), path))"
            ) from None
        raise KdpipeError(
            f"{path}: truncated or corrupt weights file (UnpicklingError); re-download or re-save it"
        ) from None
    except Exception as e:  # noqa: BLE001 - zip/pickle readers raise many types for a damaged file
        raise KdpipeError(
            f"{path}: truncated or corrupt weights file ({type(e).__name__}); re-download or re-save it"
        ) from None


def _state_dict(obj: object, path: Path, arch: str) -> dict[str, torch.Tensor]:
    """The tensors of a plain state_dict, a kdpipe artifact or a {"state_dict"|"model": ...} checkpoint."""
    from pipeline.checkpoint import ARTIFACT_FORMAT  # here: checkpoint imports the model registry
    from pipeline.models import canonical_arch, check_arch

    if isinstance(obj, dict) and obj.get("format") == ARTIFACT_FORMAT:
        other = str(obj.get("arch"))
        check_arch(other, f"{path}: artifact arch")
        if canonical_arch(other) != canonical_arch(arch):
            raise KdpipeError(
                f"{path}: a kdpipe artifact of arch {other!r}, not {arch!r}; "
                f"pick a {arch} artifact for init.path"
            )
        obj = obj.get("state_dict")
    elif isinstance(obj, dict):
        obj = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    if not (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise KdpipeError(
            f"{path}: not a state dict (expected a mapping of names to tensors); save model.state_dict()"
        )
    out = {}
    for k, v in obj.items():
        for prefix in _DROP:
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def _map_keys(sd: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename file keys onto the model's: as they are, or with the torchvision adapter's `net.` prefix."""

    def hits(prefix: str) -> int:
        return sum(prefix + k in want for k in sd)

    prefix = max(("", "net."), key=hits)
    return {prefix + k: v for k, v in sd.items()}


def _adapt_stem(sd: dict[str, torch.Tensor], want: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """Fit RGB stem-conv weights to a model with C input channels; returns the adapted key or None.

    C = 1: sum over the 3 input channels (a gray image replicated to RGB gives the same response);
    other C: cycle the channels and scale by 3/C to keep the activation scale.
    """
    key = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    if key not in sd or sd[key].ndim != 4:
        return None
    w, (o, c, kh, kw) = sd[key], want[key].shape
    if (w.shape[0], w.shape[2], w.shape[3]) != (o, kh, kw) or w.shape[1] == c:
        return None
    cin = w.shape[1]
    sd[key] = w.sum(1, keepdim=True) if c == 1 else w.repeat(1, -(-c // cin), 1, 1)[:, :c] * (cin / c)
    log.info("init: stem %s adapted from %d to %d input channels", key, cin, c)
    return key


def apply_init(model: nn.Module, p: InitParams, arch: str) -> dict:
    """Load `p.path` into `model` (built for `arch`); returns what happened (counts and key lists)."""
    path = Path(p.path)
    want = model.state_dict()
    sd = _map_keys(_state_dict(_read(path), path, arch), want)
    adapted = _adapt_stem(sd, want, model)
    head_name, head = head_module(model)
    head_keys = {f"{head_name}.{k}" for k in head.state_dict()}

    def same(k: str) -> bool:
        return k in sd and tuple(sd[k].shape) == tuple(want[k].shape)

    body = [k for k in want if k not in head_keys]
    matched = [k for k in body if same(k)]
    mismatched = [k for k in body if k in sd and not same(k)]
    missing = [k for k in body if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if len(matched) < _MIN_MATCH * len(body) or (p.strict and (mismatched or missing or unexpected)):
        first = (
            f"e.g. {mismatched[0]}: file {tuple(sd[mismatched[0]].shape)} "
            f"vs model {tuple(want[mismatched[0]].shape)}"
            if mismatched
            else f"e.g. missing {missing[0]}"
            if missing
            else f"e.g. unexpected {unexpected[0]}"
        )
        raise KdpipeError(
            f"{path}: weights of another architecture for {arch!r} ({len(matched)} of {len(body)} tensors "
            f"match; {first}); use a file trained for {arch}, or init.strict: false to load what matches"
        )
    head_ok = all(same(k) for k in head_keys)
    if p.head == "keep" and not head_ok:
        got = tuple(sd[f"{head_name}.weight"].shape) if f"{head_name}.weight" in sd else "none"
        raise KdpipeError(
            f"{path}: head layer {head_name} is {got} in the file "
            f"but {tuple(head.weight.shape)} in the model; set init.head: auto (or replace) to start it fresh"
        )
    load_head = p.head != "replace" and head_ok
    replaced = [] if load_head else sorted(head_keys)
    if not load_head:
        got = tuple(sd[f"{head_name}.weight"].shape) if f"{head_name}.weight" in sd else "absent"
        log.info(
            "init: head layer %s replaced (file %s, model %s): it keeps its fresh init",
            head_name,
            got,
            tuple(head.weight.shape),
        )
    keys = matched + (sorted(head_keys) if load_head else [])
    model.load_state_dict({k: sd[k] for k in keys}, strict=False)
    if missing or mismatched or unexpected:
        log.warning(
            "init: %s loaded non-strictly: %d missing, %d shape-mismatched, %d unexpected tensors",
            path,
            len(missing),
            len(mismatched),
            len(unexpected),
        )
    log.info("init: loaded %d tensors from %s into %s", len(keys), path, arch)
    return {
        "loaded": len(keys),
        "replaced_head": replaced,
        "missing": missing,
        "mismatched": mismatched,
        "unexpected": unexpected,
        "adapted_stem": adapted,
    }
