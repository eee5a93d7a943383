"""INT8 static quantization with ONNX Runtime, calibrated on training images, with per-family recipes.

Steps: `quant_pre_process` (symbolic shape inference, fusions, ONNX shape inference), then
`quantize_static` in QDQ format with a calibration reader over N *training* images (never test
images), fed exactly as at serving time (float32 in [0, 1]). Default types: U8 activations, S8
weights (on x86 without VNNI and with AVX512 VNNI alike, U8S8 is the fast path of ORT's MLAS kernels;
S8S8 measured 2.7x slower on this project's CPU). A `Recipe` says which nodes stay fp32 (named
`KEEP_RULES` over the graph, so it works for any exported nn.Module), per-channel or per-tensor
weight scales, the op types to quantize and `quantize_static` extra options. `RECIPES` maps a model
family to its default recipe (figures: bench/results_int8_families.md).

Deterministic: the same fp32 file, images, n and seed give a byte-identical INT8 file (the op-type
list is passed sorted: ORT's default comes from a `set`, whose order changes with PYTHONHASHSEED).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from pipeline.errors import KdpipeError
from pipeline.logs import NOISY, quiet_loggers
from pipeline.onnx_graph import name_nodes
from pipeline.predict import INPUT, check_onnx
from pipeline.quant_recipes import (  # noqa: F401 - the recipe API is used through this module too
    DEFAULT_OPS,
    FAMILIES,
    FUSIONS,
    KEEP_RULES,
    MANUAL,
    RECIPES,
    Recipe,
    family_of,
    nodes_for,
    recipe_for,
    with_options,
)

log = logging.getLogger(__name__)

QUANT_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
CALIB_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class ImageReader(CalibrationDataReader):
    """Feeds `n` images drawn (seeded, without replacement) from uint8 NCHW `images` as
    {"image": float32 [0, 1]}."""

    def __init__(
        self, images: torch.Tensor | np.ndarray, n: int, batch_size: int = 32, seed: int = 0
    ) -> None:
        x = images.numpy() if torch.is_tensor(images) else np.asarray(images)
        if n < 1 or len(x) == 0:
            raise KdpipeError(
                f"INT8 calibration needs at least one training image (export.calib_images={n}, {len(x)} "
                "available); raise export.calib_images"
            )
        # a random, not first-N, sample: no class order bias
        pick = np.random.default_rng(seed).permutation(len(x))[:n]
        self.x = x[np.sort(pick)]
        self.batch_size = batch_size
        self.pos = 0

    def __len__(self) -> int:
        return len(self.x)

    def get_next(self) -> dict | None:
        if self.pos >= len(self.x):
            return None
        xb = self.x[self.pos : self.pos + self.batch_size].astype(np.float32) / np.float32(255.0)
        self.pos += self.batch_size
        return {INPUT: xb}

    def rewind(self) -> None:
        self.pos = 0


def preprocess(fp32_path: str | Path, out_path: str | Path, fusions: tuple[str, ...] = ()) -> None:
    """ORT's pre-processing (shape inference + fusions) of an fp32 model, then unique node names
    (`name_nodes`) and the recipe's `fusions` (FUSIONS rewrites): the graph that is quantized, and the fp32
    reference the accuracy fallback compares it with."""
    quant_pre_process(str(fp32_path), str(out_path))
    model = onnx.load(str(out_path))
    name_nodes(model)
    for f in fusions:
        FUSIONS[f](model)
    onnx.save(model, str(out_path))


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calib_images: torch.Tensor | np.ndarray,
    n: int = 512,
    method: str = "minmax",
    activation: str = "u8",
    weight: str = "s8",
    per_channel: bool = True,
    seed: int = 0,
    fp32_stem: bool = True,
    recipe: Recipe | None = None,
    exclude: list[str] | tuple[str, ...] = (),
) -> dict:
    """Static QDQ INT8 model of `fp32_path` at `out_path` (written directly: pass a temporary name).

    `calib_images`: uint8 NCHW training images; `n` of them calibrate the activation ranges with
    `method` (minmax | entropy | percentile). `recipe` (see RECIPES) picks fp32 nodes, weight scales
    and options; without it `per_channel` and `fp32_stem` (first Conv unquantized) apply ("manual").
    `exclude`: more node names kept fp32 (the accuracy fallback). Returns the settings, also stored
    in the INT8 file's metadata (`quantization`).
    """
    if method not in CALIB_METHODS or activation not in QUANT_TYPES or weight not in QUANT_TYPES:
        raise KdpipeError(
            f"INT8 settings calib_method={method!r}, activation_type={activation!r}, weight_type={weight!r}: "
            f"choose from {sorted(CALIB_METHODS)} and {sorted(QUANT_TYPES)}"
        )
    if recipe is None:
        recipe = Recipe(MANUAL, keep=("stem",) if fp32_stem else (), per_channel=per_channel)
    reader = ImageReader(calib_images, n, seed=seed)
    src = onnx.load(str(fp32_path))
    info = {
        "format": "QDQ",
        "recipe": recipe.name,
        "activation_type": activation,
        "weight_type": weight,
        "per_channel": recipe.per_channel,
        "calib_method": method,
        "calib_images": len(reader),
        "calib_split": "train",
        "keep_rules": list(recipe.keep),
        "op_types": list(recipe.op_types) or "default",
        "extra_options": dict(recipe.extra),
        "fusions": list(recipe.fusions),
    }
    # onnxruntime.quantization resets its loggers to INFO when it runs: quiet them around it
    with tempfile.TemporaryDirectory(prefix="kdpipe-quant-") as tmp, quiet_loggers(*NOISY):
        pre = Path(tmp) / "pre.onnx"
        preprocess(fp32_path, pre, recipe.fusions)
        graph = onnx.load(str(pre)).graph
        keep = nodes_for(recipe, graph)
        keep += [e for e in exclude if e not in keep]
        info["fp32_nodes"] = keep
        quantize_static(
            str(pre),
            str(out_path),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types or DEFAULT_OPS),
            per_channel=recipe.per_channel,
            activation_type=QUANT_TYPES[activation],
            weight_type=QUANT_TYPES[weight],
            calibrate_method=CALIB_METHODS[method],
            nodes_to_exclude=keep,
            extra_options=dict(recipe.extra),
        )
    q = onnx.load(str(out_path))
    meta = {p.key: p.value for p in src.metadata_props} | {"quantization": json.dumps(info)}
    del q.metadata_props[:]
    for k, v in meta.items():
        q.metadata_props.add(key=k, value=v)
    check_onnx(q, "the INT8 model fails the ONNX checker", "try calib_method or types in export")
    onnx.save(q, str(out_path))
    log.info(
        "INT8 QDQ %s%s recipe %s, per_channel=%s, %s calibration on %d training images; %d fp32 nodes",
        activation.upper(),
        weight.upper(),
        recipe.name,
        recipe.per_channel,
        method,
        len(reader),
        len(keep),
    )
    return info
