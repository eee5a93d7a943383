"""The prepared-data directory: memory-mappable uint8 images, int64 labels and meta.json.

Layout of `data/prepared/`:
    meta.json                  format, class_names, mean, std, source, augmentation keys,
                               splits {name: {n, shape}}, notes
    {train,val,test}.u8        images, uint8, C-order (N, C, H, W), no header
    {train,val,test}.labels    labels, little-endian int64 (N,)
The directory is built in a temporary sibling and renamed over the old one only when complete, so a
failed or killed prepare-data leaves the previous data (or nothing), never a half-written set.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import KdpipeError

FORMAT = "kdpipe.data/1"
CHUNK = 1024  # images copied per step (bounded memory)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `out`; on success it replaces `out`, on failure it is
    removed."""
    out = Path(out)
    made = [d for d in reversed(out.parents) if not d.exists()]  # removed again if the build fails
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise KdpipeError(
            f"cannot write {out}: {e.strerror}; check the directory's permissions and free space"
        ) from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = out.parent / f".{out.name}.old.{os.getpid()}"
        if out.exists() or out.is_symlink():
            os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():
            old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(made):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def scratch_alloc(folder: Path) -> Callable[[tuple[int, ...]], torch.Tensor]:
    """An allocator of uint8 buffers backed by memmap files in `folder` (decoding big sources without the
    RAM)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = iter(range(1 << 30))

    def alloc(shape: tuple[int, ...]) -> torch.Tensor:
        if math.prod(shape) == 0:
            return torch.empty(shape, dtype=torch.uint8)
        return torch.from_numpy(
            np.memmap(folder / f"{next(count)}.u8", dtype=np.uint8, mode="w+", shape=shape)
        )

    return alloc


def write_split(folder: Path, name: str, x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor) -> dict:
    """Write images x[rows] and labels y as `{name}.u8` / `{name}.labels`; returns the split's meta entry."""
    shape = (len(rows), *x.shape[1:])
    path = folder / f"{name}.u8"
    if len(rows):
        mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
        out = torch.from_numpy(mm)
        for s in range(0, len(rows), CHUNK):
            out[s : s + CHUNK] = x[rows[s : s + CHUNK]]
        mm.flush()
        del out, mm
    else:
        path.write_bytes(b"")
    y.numpy().astype("<i8").tofile(folder / f"{name}.labels")
    return {"n": len(rows), "shape": list(shape)}


def write_meta(folder: Path, meta: dict) -> None:
    (folder / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=1))


def load_prepared(path: str | Path) -> dict:
    """Open a prepared-data directory: the dict prepare-data made, images memory-mapped (opening reads no
    pixels).

    Also accepts `<dir>/data.pt`: that file if it exists (a torch-saved dict), else `<dir>`.
    """
    path = Path(path)
    if path.suffix == ".pt":
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
                raise KdpipeError(
                    f"{path}: not a readable prepared data set ({type(e).__name__}); re-run prepare-data"
                ) from None
        path = path.parent
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise KdpipeError(
            f"{path}: prepared data set not found (no meta.json); run prepare-data first (dvc repro "
            "prepare-data)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise KdpipeError(f"{meta_path}: not kdpipe prepared data ({FORMAT}); re-run prepare-data")
    d = {k: v for k, v in meta.items() if k not in ("format", "splits")}
    for name, s in meta["splits"].items():
        shape, f = tuple(s["shape"]), path / f"{name}.u8"
        if not f.is_file() or f.stat().st_size != math.prod(shape):
            raise KdpipeError(f"{f}: missing or not {math.prod(shape)} bytes; re-run prepare-data")
        mm = (
            np.memmap(f, dtype=np.uint8, mode="c", shape=shape)
            if math.prod(shape)
            else np.empty(shape, np.uint8)
        )
        d[f"{name}_x"] = torch.from_numpy(mm)  # copy-on-write map: writable, never written back
        d[f"{name}_y"] = torch.from_numpy(np.fromfile(path / f"{name}.labels", dtype="<i8").astype(np.int64))
    return d
