"""Parity of ONNX Runtime against PyTorch on real held-out images, and top-1 of an exported file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.errors import KdpipeError
from pipeline.predict import make_session, read_metadata, run_logits

log = logging.getLogger(__name__)


def to_unit(images_u8: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 in [0, 1]: what the exported model takes."""
    x = images_u8.numpy() if torch.is_tensor(images_u8) else images_u8
    return x.astype(np.float32) / np.float32(255.0)


@torch.no_grad()
def torch_logits(wrapped: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    outs = [
        wrapped(torch.from_numpy(images[i : i + batch_size])).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs)


def check_parity(
    wrapped: nn.Module,
    sess,
    images_u8: torch.Tensor,
    atol: float,
    rtol: float = 0.0,
    batches: tuple[int, ...] = (1, 7),
) -> tuple[dict, np.ndarray, np.ndarray]:
    """ORT vs torch on real held-out images: each batch size in `batches` (proves the dynamic axis),
    then every image (batches of 256).

    Passes when max |Δlogit| <= tol = atol + rtol * max |z_torch| (the relative part follows the logit
    scale, so large-logit models are judged alike) and the top-1 agreement is 100 % on the *decisive*
    images, those whose torch top-2 margin exceeds 2 tol. Near-ties are left out because two logits
    within 2 tol of each other may swap order legitimately; on decisive images a flip implies a logit
    off by more than tol, so this check fails only together with the tolerance, and is reported as the
    figure a user reads. Returns (report, ORT logits, torch logits); a failure is a KdpipeError naming
    each figure that failed.
    """
    x = to_unit(images_u8)
    wrapped = wrapped.eval()
    per_batch = {}
    for b in batches:
        xb = x[:b]
        per_batch[str(len(xb))] = float(np.abs(run_logits(sess, xb, b) - torch_logits(wrapped, xb)).max())
    ort_z, torch_z = run_logits(sess, x), torch_logits(wrapped, x)
    max_diff = max([float(np.abs(ort_z - torch_z).max())] + list(per_batch.values()))
    tol = atol + rtol * float(np.abs(torch_z).max())
    top2 = np.sort(torch_z, axis=1)[:, -2:] if torch_z.shape[1] > 1 else np.concatenate([torch_z, torch_z], 1)
    decisive = (top2[:, 1] - top2[:, 0]) > 2 * tol
    same = ort_z.argmax(1) == torch_z.argmax(1)
    agreement = float(same[decisive].mean()) if decisive.any() else 1.0
    report = {
        "max_abs_diff": max_diff,
        "tolerance": tol,
        "atol": atol,
        "rtol": rtol,
        "max_abs_logit": float(np.abs(torch_z).max()),
        "top1_agreement": agreement,
        "top1_agreement_all": float(same.mean()),
        "decisive_images": int(decisive.sum()),
        "images": len(x),
        "max_abs_diff_by_batch": per_batch,
    }
    fails = []
    if max_diff > tol:
        fails.append(
            f"max |Δlogit| {max_diff:.3g} exceeds the tolerance {tol:.3g} (= parity_atol {atol:g} + "
            f"parity_rtol {rtol:g}"
            f" x max |logit| {report['max_abs_logit']:.3g}); raise export.parity_atol/parity_rtol"
        )
    if agreement < 1.0:
        fails.append(
            f"top-1 agreement {agreement:.4%} on {int(decisive.sum())} decisive images (top-2 margin > 2 x "
            "tolerance), need 100%"
        )
    if fails:
        raise KdpipeError(
            f"ONNX Runtime does not match PyTorch on {len(x)} test images: {'; '.join(fails)} "
            "(or check the exporter/opset, export.opset)"
        )
    log.info(
        "parity: max |Δlogit| %.3g (tolerance %.3g) at batches %s and on %d test images, top-1 agreement "
        "%.2f%% (%d decisive images)",
        max_diff,
        tol,
        ",".join(per_batch),
        len(x),
        100 * agreement,
        int(decisive.sum()),
    )
    return report, ort_z, torch_z


def top1(logits: np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    y = y.numpy() if torch.is_tensor(y) else y
    return float((logits.argmax(1) == y).mean())


def onnx_accuracy(path: str | Path, data: dict, threads: int = 0, provider: str = "auto") -> float:
    """Top-1 of an exported .onnx file on the prepared test split (used by export and the report)."""
    meta = read_metadata(path)
    shape = tuple(data["test_x"].shape[1:])
    if shape != (meta["in_channels"], meta["input_size"], meta["input_size"]):
        raise KdpipeError(
            f"{path} takes images {meta['in_channels']}x{meta['input_size']}x{meta['input_size']} but the "
            f"test set is {'x'.join(map(str, shape))}; re-export it for this data (dvc repro)"
        )
    sess, _ = make_session(path, threads, provider)
    return top1(run_logits(sess, to_unit(data["test_x"])), data["test_y"])
