"""Raw source -> prepared splits: validation held out of the TRAIN split by seed (class-balanced),
optional balanced subsets, resizing to `image_size`, and the training split's mean/std.

`prepare(p, seed)` returns everything in memory (tests); `prepare_to(p, seed, dir)` writes the
memory-mappable directory of `pipeline.data.cache` atomically and returns the summary. The test
split is never used for selection: it only ever shrinks by `test_subset`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.data import cache
from pipeline.data.augment import resize
from pipeline.data.params import DataParams
from pipeline.data.sources import SOURCES, Alloc, Part, Raw, memory_alloc
from pipeline.data.split import balanced_subset, check_size, complement
from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)
Selection = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # split -> (x, rows of x, labels)


def _resize_part(part: Part, size: int, policy: str, alloc: Alloc) -> Part:
    out = alloc((len(part.rows), part.x.shape[1], size, size))
    for s in range(0, len(part.rows), cache.CHUNK):
        out[s : s + cache.CHUNK] = resize(part.x[part.rows[s : s + cache.CHUNK]], size, policy)
    return Part(out, part.y)


def load_raw(p: DataParams, seed: int, alloc: Alloc = memory_alloc) -> Raw:
    """The configured source's train/test parts, at `image_size` when it is set."""
    raw = SOURCES[p.source].load(p, seed, alloc)
    if p.image_size and not raw.resized and raw.train.x.shape[-1] != p.image_size:
        raw.train, raw.test = (
            _resize_part(part, p.image_size, p.resize, alloc) for part in (raw.train, raw.test)
        )
    return raw


def select(raw: Raw, p: DataParams, seed: int) -> Selection:
    """Hold out validation from the training part, then subset train and test (all class-balanced, seeded)."""
    g = torch.Generator().manual_seed(seed)
    ytr, yte = raw.train.y, raw.test.y
    check_size("val_size", p.val_size, len(ytr), strict_less=True)
    val = balanced_subset(ytr, p.val_size, g)
    tr = complement(len(ytr), val)
    if p.train_subset:
        check_size("train_subset", p.train_subset, len(tr))
        tr = tr[balanced_subset(ytr[tr], p.train_subset, g)]
    te = torch.arange(len(yte))
    if p.test_subset:
        check_size("test_subset", p.test_subset, len(yte))
        te = balanced_subset(yte, p.test_subset, g)
    return {
        "train": (raw.train.x, raw.train.rows[tr], ytr[tr]),
        "val": (raw.train.x, raw.train.rows[val], ytr[val]),
        "test": (raw.test.x, raw.test.rows[te], yte[te]),
    }


def size_problems(p: DataParams, model_subsets: dict[str, int] | None = None) -> list[str]:
    """Every subset size the source cannot give (the rules of `select`; `model_subsets`: a model's params key
    -> its own train_subset), found without decoding images."""
    sizes = SOURCES[p.source].sizes
    if sizes is None:
        return []
    try:
        n_train, n_test = sizes(p)
    except KdpipeError as e:
        return [f"data: {e}"]
    checks = [("val_size", p.val_size, n_train, True), ("test_subset", p.test_subset, n_test, False)]
    train = n_train - min(p.val_size, n_train)
    if p.train_subset:
        checks.append(("train_subset", p.train_subset, train, False))
    checks += [(key, n, p.train_subset or train, False) for key, n in (model_subsets or {}).items()]
    problems = []
    for key, want, have, strict in checks:
        try:
            if want or key == "val_size":
                check_size(key, want, have, strict_less=strict)
        except KdpipeError as e:
            problems.append(str(e))
    return problems


def channel_stats(x: torch.Tensor, rows: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (values in [0, 1]) of x[rows], in chunks (float64 sums)."""
    c = x.shape[1]
    s1, s2, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for s in range(0, len(rows), cache.CHUNK):
        xb = x[rows[s : s + cache.CHUNK]].double() / 255
        s1 += xb.sum(dim=(0, 2, 3))
        s2 += (xb * xb).sum(dim=(0, 2, 3))
        count += xb.numel() // c
    mean = s1 / count
    var = (s2 - count * mean * mean) / max(1, count - 1)  # unbiased, as torch.std
    return mean.tolist(), var.clamp_min(0).sqrt().clamp_min(1e-3).tolist()


def _meta(p: DataParams, raw: Raw, mean: list[float], std: list[float]) -> dict:
    a = p.augment
    return {
        "class_names": list(raw.classes),
        "source": p.source,
        "mean": mean,
        "std": std,
        "flip": SOURCES[p.source].flip if a.flip is None else a.flip,
        "pad": a.pad if a.crop == "pad_crop" else 0,
        "crop": a.crop,
        "scale": list(a.scale),
        "ratio": list(a.ratio),
        "resident_max_mb": p.resident_max_mb,
        "workers": p.workers,
        "notes": dict(raw.notes),
    }


def prepare(p: DataParams, seed: int) -> dict:
    """Prepare in memory: {train,val,test}_{x,y}, class_names, mean, std, source, flip, pad, crop, ..."""
    raw = load_raw(p, seed)
    sel = select(raw, p, seed)
    d = _meta(p, raw, *channel_stats(*sel["train"][:2]))
    for name, (x, rows, y) in sel.items():
        d[f"{name}_x"], d[f"{name}_y"] = x[rows].contiguous(), y.contiguous()
    return d


def prepare_to(p: DataParams, seed: int, out: str | Path) -> dict:
    """Prepare into the directory `out` (memmap files + meta.json, atomically); returns `summary`."""
    out = Path(out)
    with cache.staging(out) as tmp:
        raw = load_raw(p, seed, cache.scratch_alloc(tmp / "scratch"))
        sel = select(raw, p, seed)
        meta = _meta(p, raw, *channel_stats(*sel["train"][:2]))
        meta["splits"] = {name: cache.write_split(tmp, name, *s) for name, s in sel.items()}
        cache.write_meta(tmp, meta)
        del raw, sel
        for f in sorted((tmp / "scratch").glob("*")):
            f.unlink()
        (tmp / "scratch").rmdir()
    return summary(cache.load_prepared(out))


def summary(d: dict) -> dict:
    """Plain numbers describing a prepared data set (for metrics.json), with the source's counts."""
    return {
        "train": len(d["train_y"]),
        "val": len(d["val_y"]),
        "test": len(d["test_y"]),
        "classes": len(d["class_names"]),
        "channels": int(d["train_x"].shape[1]),
        "size": int(d["train_x"].shape[-1]),
        **{k: int(v) for k, v in d.get("notes", {}).items()},
    }
