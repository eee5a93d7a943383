"""Self-describing artifacts, resumable training state and atomic writes.

Every file a training job writes is ONE artifact format: a dict of tensors and plain values that
loads with `torch.load(path, weights_only=True)`, tagged `format: kdpipe.artifact/1` and a `kind`:

    model kinds      teacher | student | patriarch | generation   (`load_model(path)` rebuilds the network)
    knowledge kinds  professor | factor | probes                   (read by pipeline.knowledge)

Common keys: format, kdpipe_version, kind, name, params (the job's resolved params), metrics (final
numbers of the run, never timings), state_dict; model kinds add arch, arch_kwargs, num_classes,
in_channels, input_size, mean, std, class_names. Nothing run-dependent (wall-clock, paths) is stored,
so the same inputs give byte-identical files.

Every file is written to a temporary name in the same directory and renamed, so a killed or failed run
never leaves a half-written file and never removes the previous good one. Disk-full and permission
errors become one KdpipeError line naming the path and the free space.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pipeline import __version__
from pipeline.errors import KdpipeError
from pipeline.models import create_model

ARTIFACT_FORMAT = "kdpipe.artifact/1"
MODEL_KINDS = ("teacher", "student", "patriarch", "generation")
KNOWLEDGE_KINDS = ("professor", "factor", "probes")
KINDS = MODEL_KINDS + KNOWLEDGE_KINDS
MODEL_FIELDS = (
    "arch",
    "arch_kwargs",
    "num_classes",
    "in_channels",
    "input_size",
    "mean",
    "std",
    "class_names",
)


def _free_space(path: Path) -> str:
    """Free space of the file system holding `path` (its nearest existing parent), for error messages."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def _write_error(path: Path, e: OSError) -> KdpipeError:
    return KdpipeError(
        f"cannot write {path}: {e.strerror or e} ({_free_space(path)}); "
        "free disk space or fix the directory's permissions, then re-run"
    )


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.

    Any OSError while writing (ENOSPC, EACCES, EROFS, ...) is one KdpipeError; the previous file at
    `path`, if any, is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a run killed between write and rename: never read
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only show at flush time: fail before the rename


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save(obj: Any, path: str | Path) -> None:
    """torch.save atomically (serialised in memory first, so a write error cannot hide inside torch)."""
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
    except Exception as e:
        raise KdpipeError(
            f"{path}: not a readable {what} ({type(e).__name__}); delete it and re-run its stage"
        ) from None


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on CPU, without DDP's `module.` or torch.compile's `_orig_mod.` prefixes."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.replace(prefix, "")
        # contiguous: a channels_last run saves the same bytes as a plain one
        out[k] = v.detach().cpu().clone(memory_format=torch.contiguous_format)
    return out


def _plain(v: Any) -> Any:
    """weights_only-safe copy of a value: tensors on CPU, tuples as lists, Paths as strings.

    Strings are interned: pickle writes a string once and then refers back to it by object identity, so
    equal strings must be one object for equal artifacts to be equal bytes (a resumed run reads its
    metric names back from last.pt as new objects).
    """
    if torch.is_tensor(v):
        return v.detach().cpu().clone()
    if isinstance(v, dict):
        return {sys.intern(str(k)): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, Path)):
        return sys.intern(str(v))
    return v


def make_artifact(
    model: nn.Module | None = None,
    *,
    kind: str,
    name: str,
    params: dict,
    metrics: dict,
    state_dict: dict | None = None,
    **fields: Any,
) -> dict:
    """One artifact of `kind`: the network's weights (`model` or `state_dict`) plus plain descriptive values.

    Model kinds need the MODEL_FIELDS (arch, num_classes, ...); knowledge kinds carry their own fields.
    `metrics` keeps numbers only, and never timings (`time/...`), so identical runs give identical bytes.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {', '.join(KINDS)}")
    missing = [f for f in MODEL_FIELDS if f not in fields] if kind in MODEL_KINDS else []
    if missing:
        raise ValueError(f"a {kind} artifact needs {', '.join(missing)}")
    if kind in MODEL_KINDS:
        fields.update(
            num_classes=int(fields["num_classes"]),
            in_channels=int(fields["in_channels"]),
            input_size=int(fields["input_size"]),
            mean=[float(m) for m in fields["mean"]],
            std=[float(s) for s in fields["std"]],
            arch_kwargs=dict(fields["arch_kwargs"]),
        )
    sd = clean_state_dict(model) if model is not None else state_dict or {}
    nums = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("time/")
    }
    return _plain(
        {
            "format": ARTIFACT_FORMAT,
            "kdpipe_version": __version__,
            "kind": kind,
            "name": name,
            **fields,
            "params": params,
            "metrics": nums,
            "state_dict": sd,
        }
    )


def load_artifact(path: str | Path, kinds: Iterable[str] | None = None) -> dict:
    """Read an artifact; `kinds` restricts what is accepted (a wrong kind is a one-line error)."""
    kinds = tuple(kinds) if kinds is not None else KINDS
    noun = "model " if set(kinds) <= set(MODEL_KINDS) else "" if kinds == KINDS else "/".join(kinds) + " "
    art = load(path, f"kdpipe {noun}artifact")
    if not isinstance(art, dict) or art.get("format") != ARTIFACT_FORMAT:
        raise KdpipeError(
            f"{path}: not a kdpipe {noun}artifact (no '{ARTIFACT_FORMAT}' format tag); "
            "re-run the stage that writes it"
        )
    if art.get("kind") not in kinds:
        raise KdpipeError(
            f"{path}: is a {art.get('kind')!r} artifact, expected {' or '.join(kinds)}; check the path"
        )
    return art


def check_fields(meta: dict, expect: dict | None, path: str | Path, against: str = "params say") -> None:
    """One-line error when an artifact's arch/num_classes/in_channels/... differ from what params (or,
    `against="the data has"`, the prepared data) say."""
    for key, want in (expect or {}).items():
        if want is not None and meta.get(key) != want:
            raise KdpipeError(
                f"{path}: has {key}={meta.get(key)!r} but {against} {want!r}; "
                "retrain it on this data (dvc repro) or fix its params entry"
            )


def load_state(module: nn.Module, state_dict: dict, path: str | Path, what: str) -> None:
    """load_state_dict whose mismatch is one line, not torch's multi-line 'Error(s) in loading state_dict'."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise KdpipeError(
            f"{path}: its weights do not fit {what} ({first.rstrip('.')}); "
            "the file is damaged or was written for another architecture, re-run its stage"
        ) from None


def model_from_artifact(art: dict, path: str | Path = "artifact") -> nn.Module:
    model = create_model(art["arch"], art["num_classes"], art["in_channels"], **art.get("arch_kwargs", {}))
    load_state(model, art["state_dict"], path, f"arch {art['arch']!r}")
    return model.eval()


def load_model(
    path: str | Path, expect: dict | None = None, against: str = "params say"
) -> tuple[nn.Module, dict]:
    """Rebuild a model from its artifact alone; returns (model in eval mode, artifact without state_dict).

    `expect` (e.g. {"arch": "resnet20", "num_classes": 10}) is what params (or `against`) say the file holds.
    """
    art = load_artifact(path, MODEL_KINDS)
    meta = {k: v for k, v in art.items() if k != "state_dict"}
    check_fields(meta, expect, path, against)
    return model_from_artifact(art, path), meta


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
