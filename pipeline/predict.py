"""ONNX Runtime side of deployment: kdpipe metadata, sessions with explicit providers, image input, top-k.

Nothing here imports torch: an exported model is served with onnx, onnxruntime, numpy and Pillow.
The ONNX contract: input `image` float32 NCHW in [0, 1] (normalisation is inside the
graph), dynamic batch axis, output `logits`; `metadata_props` describe classes, size and channels.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)

INPUT, OUTPUT = "image", "logits"
META_FORMAT = "kdpipe.onnx/1"  # value of the `kdpipe_format` metadata key
JSON_KEYS = ("class_names", "mean", "std")  # metadata values stored as JSON text
INT_KEYS = ("input_size", "in_channels")
REQUIRED = (
    "class_names",
    "input_size",
    "in_channels",
    "mean",
    "std",
    "arch",
    "source_sha256",
    "kdpipe_version",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def resolve_threads(threads: int) -> int:
    """0 means every core this process may use (its CPU affinity), so the recorded number is the real one."""
    if threads > 0:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_metadata(props: dict[str, str], where: str) -> dict:
    """kdpipe metadata_props (all strings) -> typed values; a model without them is a KdpipeError."""
    missing = [k for k in REQUIRED if k not in props]
    if missing:
        raise KdpipeError(
            f"{where}: no kdpipe metadata (missing {', '.join(missing)}); export it with `kdpipe export`"
        )
    try:
        meta = dict(props)
        meta.update({k: json.loads(props[k]) for k in JSON_KEYS})
        meta.update({k: int(props[k]) for k in INT_KEYS})
        if "quantization" in props:
            meta["quantization"] = json.loads(props["quantization"])
    except (ValueError, TypeError) as e:
        raise KdpipeError(
            f"{where}: corrupt kdpipe metadata ({e}); re-export the model with `kdpipe export`"
        ) from None
    return meta


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:200]


def check_onnx(model: onnx.ModelProto, what: str, fix: str, full_check: bool = True) -> None:
    """onnx.checker (with type and shape inference when `full_check`); a failure is one KdpipeError line,
    `<what> (<the checker's first line>); <fix>`."""
    try:
        onnx.checker.check_model(model, full_check=full_check)
    except Exception as e:  # noqa: BLE001 - ValidationError and InferenceError
        raise KdpipeError(f"{what} ({_first_line(e)}); {fix}") from None


def load_checked(path: str | Path, full_check: bool = False) -> onnx.ModelProto:
    """Load an .onnx file and run the ONNX checker; every failure is a one-line KdpipeError."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"{path}: ONNX model not found; run `kdpipe export` (dvc repro) or fix the path")
    what, fix = f"{path}: not a valid ONNX model", "re-export it with `kdpipe export`"
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf errors of every kind mean an unusable file
        raise KdpipeError(f"{what} ({_first_line(e)}); {fix}") from None
    check_onnx(model, what, fix, full_check)
    return model


def read_metadata(path: str | Path) -> dict:
    """The parsed kdpipe metadata of an .onnx file (checked with the ONNX checker first)."""
    model = load_checked(path)
    return parse_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def make_session(
    path: str | Path, threads: int = 0, provider: str = "auto", spin: bool = True
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession with providers chosen explicitly; returns (session, provider actually used).

    `spin=False` stops idle intra-op workers from busy-waiting after a run: set it when other work
    shares the cores (benchmarks interleaving runtimes), where spinning workers starve the next one.

    `provider`: auto (CUDA when this onnxruntime build has it and a session really starts on it, else
    CPU) | cpu | cuda. `get_available_providers()` lists what was built, not what loads: a missing CUDA
    library only logs and falls back, so the session's own provider list is what we record.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a CNN is a chain: no inter-op parallelism to gain
    so.intra_op_num_threads = resolve_threads(threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3  # errors only: ORT's warnings would clutter stage output
    want_cuda = provider in ("auto", "cuda") and CUDA in ort.get_available_providers()
    if provider == "cuda" and not want_cuda:
        raise KdpipeError(
            "provider 'cuda' asked for but this onnxruntime has no CUDAExecutionProvider; install "
            "onnxruntime-gpu or use cpu"
        )
    providers = [CUDA, CPU] if want_cuda else [CPU]
    try:
        sess = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise KdpipeError(
            f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]}); re-export it"
        ) from None
    used = sess.get_providers()[0]
    if want_cuda and used != CUDA:
        log.warning("CUDAExecutionProvider is built in but did not start; running on %s", used)
    log.debug(
        "ONNX Runtime session for %s on %s, %d intra-op threads",
        Path(path).name,
        used,
        so.intra_op_num_threads,
    )
    return sess, used


def run_logits(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, C) for float32 images (N, C, H, W) in [0, 1], in batches."""
    outs = [
        sess.run([OUTPUT], {INPUT: np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32)})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def find_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files named directly, plus PNG/JPEG files found under folders; returns (candidates, skipped)."""
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            skipped.append((p, "no such file or folder"))
    return files, skipped


def load_image(path: Path, meta: dict) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1]: converted to the model's channels (L or RGB) and size."""
    from PIL import Image, UnidentifiedImageError

    c, size = meta["in_channels"], meta["input_size"]
    if c not in (1, 3):
        raise KdpipeError(
            f"model has {c} input channels; kdpipe predict reads only 1 (grayscale) or 3 (RGB) channel images"
        )
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")  # e.g. RGB photo -> grayscale model, or L/RGBA -> RGB
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__})") from None
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


@dataclass
class Prediction:
    file: str
    top: list[dict]  # [{"class": name, "index": i, "prob": p}, ...] best first


def predict(
    model_path: str | Path,
    paths: Iterable[str | Path],
    top_k: int = 3,
    threads: int = 0,
    provider: str = "auto",
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Top-k classes for every image under `paths`; returns (predictions, [(file, why skipped)])."""
    meta = read_metadata(model_path)
    files, skipped = find_images(paths)
    arrays, kept = [], []
    for f in files:
        try:
            arrays.append(load_image(f, meta))
            kept.append(f)
        except ValueError as e:
            skipped.append((f, str(e)))
    if not kept:
        why = (
            f" ({skipped[0][0]}: "
            f"{skipped[0][1]}{f'; {len(skipped) - 1} more skipped' if len(skipped) > 1 else ''})"
            if skipped
            else ""
        )
        raise KdpipeError(
            f"no readable PNG/JPEG image in the given paths{why}; pass image files or folders that contain "
            "them"
        )
    sess, _ = make_session(model_path, threads, provider)
    logits = run_logits(sess, np.stack(arrays), 64).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    k, names = max(1, min(top_k, probs.shape[1])), meta["class_names"]
    preds = []
    for f, pr in zip(kept, probs):
        order = np.argsort(-pr, kind="stable")[:k]
        preds.append(
            Prediction(str(f), [{"class": names[i], "index": int(i), "prob": float(pr[i])} for i in order])
        )
    return preds, [(str(f), why) for f, why in skipped]
