"""ONNX export of a student with its metadata, and parity of ONNX Runtime against PyTorch.

The exported graph follows the ONNX contract: input `image`, float32 NCHW in [0, 1] with
the data set's normalisation inside the graph (`Normalized`), dynamic batch axis, output `logits`,
one self-contained file, opset 18, and kdpipe `metadata_props` (see `build_metadata`).

`export_student` is the whole `export` stage: fp32 export, parity, INT8 (the family's recipe from
`pipeline.quantize.RECIPES`, kept within a validation top-1 budget by `pipeline.quant_budget`),
accuracies and latency. The .onnx files hold no local paths: the same inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from pipeline import __version__, bench, checkpoint
from pipeline.errors import KdpipeError
from pipeline.logs import NOISY, quiet_loggers
from pipeline.params import ExportParams
from pipeline.predict import INPUT, META_FORMAT, OUTPUT, make_session, read_metadata, run_logits
from pipeline.quant_budget import quantize_within_budget
from pipeline.quantize import recipe_for

log = logging.getLogger(__name__)

# torch.export specialises a dimension whose example size is 0 or 1 to that constant, so a batch-1
# example would bake batch=1 into the graph despite `dynamic_shapes`; 2 is the smallest safe size.
EXAMPLE_BATCH = 2


class Normalized(nn.Module):
    """`image` in [0, 1] -> (image - mean) / std -> student -> logits; mean/std per channel."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)


def build_metadata(art: dict, source_sha256: str) -> dict[str, str]:
    """kdpipe metadata_props (strings; lists as JSON) from a model artifact."""
    return {
        "kdpipe_format": META_FORMAT,
        "name": str(art.get("name", "")),
        "arch": str(art["arch"]),
        "class_names": json.dumps(list(art["class_names"])),
        "input_size": str(int(art["input_size"])),
        "in_channels": str(int(art["in_channels"])),
        "mean": json.dumps([float(m) for m in art["mean"]]),
        "std": json.dumps([float(s) for s in art["std"]]),
        "input_range": "[0, 1] float32 NCHW; normalisation is inside the graph",
        "source_sha256": source_sha256,
        "kdpipe_version": __version__,
    }


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


# A source location as exporters write it: `File "/abs/x.py", line 3`, or any path to a .py file.
SOURCE_REF = re.compile(r'File "|[\\/][^\s"\']*\.py\b')


def _graphs(model: onnx.ModelProto):
    """Every graph of `model`: the main one, subgraphs of control-flow nodes, and function bodies."""
    todo = [model.graph] + list(model.functions)
    while todo:
        g = todo.pop()
        yield g
        for n in g.node:
            todo += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
            todo += [sub for a in n.attribute if a.type == onnx.AttributeProto.GRAPHS for sub in a.graphs]


def strip_source_refs(model: onnx.ModelProto) -> int:
    """Drop node doc_strings and node metadata_props that name source files (the exporter's stack traces
    carry the absolute paths of the exporting checkout); model-level metadata (ours) is kept.
    Returns how many entries were removed. The file then depends on the model only, not on where it was
    made."""
    removed = 0
    for g in _graphs(model):
        if SOURCE_REF.search(g.doc_string):
            g.doc_string, removed = "", removed + 1
        for n in getattr(g, "node", []):
            if n.doc_string:
                n.doc_string, removed = "", removed + 1
            bad = [p for p in n.metadata_props if SOURCE_REF.search(p.value)]
            for p in bad:
                n.metadata_props.remove(p)
            removed += len(bad)
    if SOURCE_REF.search(model.doc_string):
        model.doc_string, removed = "", removed + 1
    return removed


def _dynamo(wrapped: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    # The exporter prints "[torch.onnx] ..." progress lines to stdout: swallow them so stage output stays
    # clean.
    with contextlib.redirect_stdout(io.StringIO()), quiet_loggers(*NOISY):
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False,
            opset_version=opset,
        )


def _legacy(wrapped: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # we chose it knowingly, and say so in the log
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamo=False,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def export_onnx(
    model: nn.Module, art: dict, source_sha256: str, path: str | Path, opset: int = 18, fallback: bool = True
) -> str:
    """Export `model` (eval, CPU) wrapped in `Normalized` to `path`; returns the exporter used.

    Exporter: pinned to the dynamo exporter (`torch.export`; the default since torch 2.9, where the
    TorchScript one is deprecated) with `dynamic_shapes` on the batch axis only, `external_data=False`
    (one self-contained file instead of .onnx + .onnx.data) and an example batch of EXAMPLE_BATCH=2
    (a batch of 1 would be specialised to a constant). If it fails for some architecture and
    `fallback` is set, the legacy TorchScript exporter is used with a WARNING in the log and
    "legacy" in the returned name (recorded in metrics.json); never silently.
    `path` is written directly: callers pass a temporary name (checkpoint.atomic_path).
    """
    path = Path(path)
    wrapped = Normalized(model.cpu().eval(), art["mean"], art["std"]).eval()
    c, s = int(art["in_channels"]), int(art["input_size"])
    example = torch.rand(EXAMPLE_BATCH, c, s, s, generator=torch.Generator().manual_seed(0))
    exporter = "dynamo"
    try:
        _dynamo(wrapped, example, path, opset)
    except Exception as e:  # noqa: BLE001 - torch.export raises many types; the message is what matters
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if not fallback:
            raise KdpipeError(
                f"dynamo ONNX export of arch {art['arch']!r} failed ({why}); allow the legacy exporter or "
                "change the arch"
            ) from None
        log.warning(
            "dynamo ONNX export of arch %r failed (%s); FALLING BACK to the legacy TorchScript exporter",
            art["arch"],
            why,
        )
        exporter = "legacy"
        _legacy(wrapped, example, path, opset)
    proto = onnx.load(str(path))
    strip_source_refs(proto)
    set_metadata(proto, build_metadata(art, source_sha256))
    check_model(proto, path)
    onnx.save(proto, str(path))
    return exporter


def check_model(proto: onnx.ModelProto, where: str | Path) -> None:
    """onnx.checker with full_check (type and shape inference too); failure is a KdpipeError."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001 - ValidationError and InferenceError
        raise KdpipeError(
            f"{where}: the exported model fails the ONNX checker ({str(e).splitlines()[0][:200]}); "
            "try another opset (export.opset) or report the arch"
        ) from None


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
            "tolerance), "
            "need 100%"
        )
    if fails:
        raise KdpipeError(
            f"ONNX Runtime does not match PyTorch on {len(x)} test images: {'; '.join(fails)} "
            "(or check the exporter/opset, export.opset)"
        )
    log.info(
        "parity: max |Δlogit| %.3g (tolerance %.3g) at batches %s and on %d test images, top-1 agreement "
        "%.2f%% "
        "(%d decisive images)",
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
            "test set is "
            f"{'x'.join(map(str, shape))}; re-export it for this data (dvc repro)"
        )
    sess, _ = make_session(path, threads, provider)
    return top1(run_logits(sess, to_unit(data["test_x"])), data["test_y"])


def _check_data(art: dict, data: dict, path: Path) -> None:
    facts = (len(data["class_names"]), int(data["test_x"].shape[1]), int(data["test_x"].shape[-1]))
    if (art["num_classes"], art["in_channels"], art["input_size"]) != facts:
        raise KdpipeError(
            f"{path} has {art['num_classes']} classes/{art['in_channels']} channels/size {art['input_size']} "
            "but the "
            f"prepared data has {facts[0]}/{facts[1]}/{facts[2]}; retrain it on this data (dvc repro)"
        )


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
    model, art = checkpoint.load_model(art_path)
    _check_data(art, data, art_path)
    sha = checkpoint.sha256(art_path)
    recipe = recipe_for(art["arch"], p.recipe)
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
        plain = (
            Path(tmp) / "recipe_only.int8.onnx"
        )  # the recipe without fallback: its latency is the fallback's cost
        with quiet_loggers(*NOISY):
            qinfo = quantize_within_budget(
                f32,
                i8,
                data["train_x"],
                val_x,
                val_y,
                recipe,
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
