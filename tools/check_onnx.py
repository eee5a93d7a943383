#!/usr/bin/env python3
"""Reproduce an exported model's test top-1 from the .onnx file alone: onnxruntime + numpy, no kdpipe.

    python tools/check_onnx.py models/export/kd.onnx               # Debian Fashion-MNIST t10k (10,000 images)
    python tools/check_onnx.py models/export/kd.int8.onnx --npz test.npz [--expect 0.8123] [--json]

Everything the model needs is in its metadata_props: class names, input size, channels. The ONNX
input `image` takes float32 NCHW in [0, 1] (normalisation is inside the graph), so the only
pre-processing is uint8 / 255. A .npz must hold `x` (uint8, N x H x W, N x C x H x W or N x H x W x C)
and `y` (integer labels). Exit status 1 when --expect is given and the top-1 differs by more than --tol.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

FASHION = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 Fashion-MNIST test images (N, 28, 28) uint8 and labels from Debian's
    dataset-fashion-mnist."""
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)  # idx3 header: 16 bytes
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)  # idx1 header: 8 bytes
    return x, y.astype(np.int64)


def to_nchw(x: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 images in any of the accepted layouts -> float32 NCHW in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] != channels and x.shape[-1] == channels:
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.shape[1:] != (channels, size, size):
        sys.exit(
            f"check_onnx: images are {x.shape[1:]} but the model takes {(channels, size, size)} (from its "
            "metadata)"
        )
    return x.astype(np.float32) / np.float32(255.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument(
        "--npz", type=Path, help="test set with arrays x and y (default: Debian Fashion-MNIST t10k)"
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--expect",
        type=float,
        help="top-1 (fraction) the report claims; exit 1 if it differs by more than --tol",
    )
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    sess = ort.InferenceSession(str(a.model), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    missing = [k for k in ("class_names", "input_size", "in_channels") if k not in meta]
    if missing:
        sys.exit(f"check_onnx: {a.model} has no kdpipe metadata ({', '.join(missing)} missing)")
    classes, size, channels = (
        json.loads(meta["class_names"]),
        int(meta["input_size"]),
        int(meta["in_channels"]),
    )
    if a.npz:
        with np.load(a.npz) as d:
            x, y = d["x"], d["y"].astype(np.int64)
    else:
        x, y = load_fashion_test()
    x = to_nchw(x, channels, size)
    pred = np.concatenate(
        [
            sess.run(["logits"], {"image": x[i : i + a.batch_size]})[0].argmax(1)
            for i in range(0, len(x), a.batch_size)
        ]
    )
    top1 = float((pred == y).mean())
    per_class = {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes) if (y == k).any()}
    out = {
        "model": str(a.model),
        "images": int(len(y)),
        "top1": top1,
        "per_class_top1": per_class,
        "arch": meta.get("arch"),
        "source_sha256": meta.get("source_sha256"),
        "quantization": meta.get("quantization"),
    }
    print(
        json.dumps(out, indent=2)
        if a.json
        else f"{a.model}: top-1 {top1:.4f} on {len(y)} images ({meta.get('arch')})"
    )
    if a.expect is not None and abs(top1 - a.expect) > a.tol:
        print(f"check_onnx: top-1 {top1:.6f} differs from the expected {a.expect:.6f}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
