"""select-student's measurement cache: one row per (candidate, environment) key, kept across budgets."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
from pathlib import Path

from pipeline import __version__, bench, checkpoint
from pipeline.predict import resolve_threads
from pipeline.select_space import Candidate, SelectParams

log = logging.getLogger(__name__)

CACHE_FORMAT = "kdpipe.select-cache/1"


def environment(sp: SelectParams, recipe: dict, facts: dict) -> dict:
    """Everything besides the candidate that changes a measurement (part of every cache key)."""
    try:
        ort = md.version("onnxruntime")
    except md.PackageNotFoundError:
        ort = md.version("onnxruntime-gpu")
    recipe = recipe if sp.precision == "int8" else {}
    return {
        "precision": sp.precision,
        "exporter": sp.exporter,
        "recipe": recipe,
        "batch_size": sp.batch_size,
        "threads": resolve_threads(sp.threads),
        "runs": sp.runs,
        "warmup": sp.warmup,
        "cpu": bench.cpu_model(),
        "onnxruntime": ort,
        "kdpipe": __version__,
        "num_classes": facts["num_classes"],
        "in_channels": facts["in_channels"],
    }


def cache_key(c: Candidate, env: dict) -> str:
    text = json.dumps({"candidate": c.key(), "env": env}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_cache(path: Path | None) -> dict:
    """The cache's entries {key: row}; a missing, foreign or corrupt file is an empty cache."""
    if path is None or not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s: unreadable measurement cache; measuring again", path)
        return {}
    return dict(doc.get("entries", {})) if isinstance(doc, dict) and doc.get("format") == CACHE_FORMAT else {}


def save_cache(path: Path | None, entries: dict) -> None:
    if path is not None:
        doc = {"format": CACHE_FORMAT, "entries": entries}
        checkpoint.atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))
