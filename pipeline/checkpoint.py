"""Self-describing artifacts, resumable training state and atomic writes.

A model artifact is a dict of tensors and plain values that loads with
`torch.load(path, weights_only=True)`; `load_model(path)` rebuilds the module from the file alone.
Every file is written to a temporary name in the same directory and renamed, so a killed run never
leaves a half-written file behind.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from pipeline import __version__
from pipeline.errors import KdpipeError
from pipeline.models import create_model

ARTIFACT_FORMAT = "kdpipe.model/1"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise KdpipeError(f"cannot write {path}: {e.strerror}; check the directory's permissions and free space") from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save(obj: Any, path: str | Path) -> None:
    """torch.save atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load(path: str | Path, what: str = "file") -> Any:
    """torch.load with weights_only=True; missing or corrupt files are a one-line KdpipeError."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"{path}: {what} not found; run the stage that produces it first (dvc repro)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise KdpipeError(f"{path}: not a readable {what} ({type(e).__name__}); delete it and re-run its stage") from None


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on CPU, without DDP's `module.` or torch.compile's `_orig_mod.` prefixes."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.replace(prefix, "")
        out[k] = v.detach().cpu().clone()
    return out


def make_artifact(model: nn.Module, *, arch: str, arch_kwargs: dict, num_classes: int, in_channels: int,
                  input_size: int, mean: list[float], std: list[float], class_names: list[str],
                  params: dict, metrics: dict, kind: str, name: str) -> dict:
    """Everything needed to rebuild and describe a trained model, as weights_only-safe values."""
    return {
        "format": ARTIFACT_FORMAT,
        "kdpipe_version": __version__,
        "kind": kind,  # teacher | student | professor | ...
        "name": name,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_size": int(input_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "class_names": list(class_names),
        "params": params,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "state_dict": clean_state_dict(model),
    }


def load_artifact(path: str | Path) -> dict:
    art = load(path, "kdpipe model artifact")
    if not isinstance(art, dict) or art.get("format") != ARTIFACT_FORMAT:
        raise KdpipeError(f"{path}: not a kdpipe model artifact (no '{ARTIFACT_FORMAT}' format tag); pass a file written by train-teacher or distill")
    return art


def model_from_artifact(art: dict) -> nn.Module:
    model = create_model(art["arch"], art["num_classes"], art["in_channels"], **art.get("arch_kwargs", {}))
    model.load_state_dict(art["state_dict"])
    return model.eval()


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a model from its artifact alone; returns (model in eval mode, artifact without state_dict)."""
    art = load_artifact(path)
    model = model_from_artifact(art)
    return model, {k: v for k, v in art.items() if k != "state_dict"}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
