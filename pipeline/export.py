"""The `export` stage's work: a trained student to a checked fp32 ONNX file and its INT8 version.

The file itself is written by `pipeline.onnx_write` (the ONNX contract, metadata, checker).
`export_student` is the whole `export` stage: fp32 export, parity, INT8 (the family's recipe from
`pipeline.quantize.RECIPES`, kept within a validation top-1 budget by `pipeline.quant_budget`),
accuracies and latency. The .onnx files hold no local paths: the same inputs give byte-identical files.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline import bench, checkpoint
from pipeline.onnx_write import Normalized, export_onnx
from pipeline.params import ExportParams
from pipeline.parity import check_parity, to_unit, top1
from pipeline.predict import make_session, run_logits
from pipeline.quant_budget import quantize_within_budget
from pipeline.quantize import recipe_for

log = logging.getLogger(__name__)


def _val_split(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Validation images (float32 [0, 1]) and labels for the INT8 budget; the test split is never used for
    it."""
    vx, vy = data.get("val_x"), data.get("val_y")
    if vx is None or vy is None or len(vy) == 0:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return to_unit(vx), (vy.numpy() if torch.is_tensor(vy) else np.asarray(vy))


def export_student(
    art_path: str | Path,
    data: dict,
    out_fp32: str | Path,
    out_int8: str | Path,
    p: ExportParams,
    provider: str = "auto",
) -> dict:
    """The `export` stage: fp32 ONNX + parity + INT8 (family recipe, validation budget) + test top-1 +
    latency; returns metrics.json's content.

    Both .onnx files are written to temporary names and renamed only when parity and quantization
    succeeded, so a failure never leaves a half-written or unchecked model behind. An INT8 model over
    the budget (`export.int8_max_drop`) does not fail the stage: it is kept (the best try), flagged
    `int8_within_budget: false` and logged once as a warning, since the fp32 model is the reference
    deliverable and the report shows the drop.
    """
    art_path = Path(art_path)
    facts = {"num_classes": len(data["class_names"]), "in_channels": int(data["test_x"].shape[1])}
    facts["input_size"] = int(data["test_x"].shape[-1])
    model, art = checkpoint.load_model(art_path, facts, against="the prepared data has")
    sha = checkpoint.sha256(art_path)
    val_x, val_y = _val_split(data)
    with (
        checkpoint.atomic_path(out_fp32) as f32,
        checkpoint.atomic_path(out_int8) as i8,
        tempfile.TemporaryDirectory(prefix="kdpipe-export-") as tmp,
    ):
        exporter = export_onnx(model, art, sha, f32, p.opset)
        sess, used = make_session(f32, p.threads, provider)
        log.info("ONNX Runtime provider: %s (exporter: %s, opset %d)", used, exporter, p.opset)
        wrapped = Normalized(model, art["mean"], art["std"])
        parity, fp32_z, torch_z = check_parity(wrapped, sess, data["test_x"], p.parity_atol, p.parity_rtol)
        # the recipe without fallback: its latency is the fallback's cost
        plain = Path(tmp) / "recipe_only.int8.onnx"
        qinfo = quantize_within_budget(
            f32,
            i8,
            data["train_x"],
            val_x,
            val_y,
            recipe_for(art["arch"], p.recipe),
            p.int8_max_drop,
            p.int8_max_tries,
            n=p.calib_images,
            method=p.calib_method,
            activation=p.activation_type,
            weight=p.weight_type,
            per_channel=p.per_channel,
            fp32_stem=p.fp32_stem,
            plain_path=plain,
        )
        int8_z = run_logits(make_session(i8, p.threads, provider)[0], to_unit(data["test_x"]))
        sizes = {"fp32": f32.stat().st_size, "int8": i8.stat().st_size}
        fell_back = qinfo["fallback"]["tries"] > 0
        files = {"ort_fp32": f32, "ort_int8": i8} | ({"ort_int8_no_fallback": plain} if fell_back else {})
        lat = bench.benchmark(
            wrapped,
            files,
            to_unit(data["test_x"][: max(p.batch_sizes)]),
            p.batch_sizes,
            p.latency_warmup,
            p.latency_runs,
            p.threads,
            provider,
        )
    y = data["test_y"]
    acc = {"torch": top1(torch_z, y), "fp32": top1(fp32_z, y), "int8": top1(int8_z, y)}
    log.info(
        "test top-1: torch %.4f, ORT fp32 %.4f, ORT INT8 %.4f (%+.2f points)",
        acc["torch"],
        acc["fp32"],
        acc["int8"],
        100 * (acc["int8"] - acc["fp32"]),
    )
    b1 = f"b{min(p.batch_sizes)}"
    cost = (
        (lat["latency"]["ort_int8"][b1]["p50_ms"] / lat["latency"]["ort_int8_no_fallback"][b1]["p50_ms"])
        if fell_back
        else 1.0
    )
    return {
        "size_bytes": sizes,
        "size_ratio": sizes["int8"] / sizes["fp32"],
        "top1": acc,
        "int8_delta": acc["int8"] - acc["fp32"],
        "int8_top1_agreement": float((int8_z.argmax(1) == fp32_z.argmax(1)).mean()),
        "recipe": qinfo["recipe"],
        "fp32_nodes": qinfo["fp32_nodes"],
        "int8_val_drop_points": qinfo["val_drop_points"],
        "int8_within_budget": qinfo["within_budget"],
        "int8_fallback_latency_ratio": cost,
        "images_per_s": {
            rt: {b: r["images_per_s"] for b, r in rows.items()} for rt, rows in lat["latency"].items()
        },
        "parity": parity,
        "quantization": qinfo,
        "latency": lat["latency"],
        "speedup": lat["speedup"],
        "env": {
            **lat["env"],
            "exporter": exporter,
            "opset": p.opset,
            "provider_used": used,
            "source": str(art_path),
            "source_sha256": sha,
            "test_images": len(y),
        },
    }


def summary(name: str, metrics: dict, batch: int) -> str:
    """The export stage's result line: test top-1 per precision, p50 latencies at `batch`, the recipe."""
    lat, b = metrics["latency"], f"b{batch}"
    if metrics["int8_within_budget"] is None:
        drop = "not measured (no validation split)"
    else:
        drop = f"{metrics['int8_val_drop_points']:.2f} points" + (
            "" if metrics["int8_within_budget"] else " (over export.int8_max_drop)"
        )
    line = (
        f"export {name}: test top-1 fp32 {metrics['top1']['fp32']:.4f}, int8 {metrics['top1']['int8']:.4f} "
        f"({100 * metrics['int8_delta']:+.2f} points); p50 at batch {batch}: torch "
        f"{lat['torch_fp32'][b]['p50_ms']:.2f} ms, ORT fp32 {lat['ort_fp32'][b]['p50_ms']:.2f} ms, "
        f"INT8 {lat['ort_int8'][b]['p50_ms']:.2f} ms [{metrics['env']['provider_used']}]; INT8 recipe "
        f"{metrics['recipe']}, validation drop {drop}"
    )
    t = metrics.get("budget_timing")
    if t:
        line += (
            f"; as selected ({t['precision']}, batch {t['batch_size']}, {t['threads']} thread(s)): "
            f"p50 {t['p50_ms']:.3f} ms, {t['size_mb']:.3f} MB"
        )
    return line
