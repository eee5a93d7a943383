"""Benchmarks from files and per model family (they export, so they sit above pipeline.export).

`bench_student` times a student artifact and its exported models (`make bench`).

`family_table` exports each arch untrained at 96 px, quantizes it with its family recipe and with ORT's
default QDQ, and times torch eager, ORT fp32 and both INT8 models with `pipeline.bench.time_runs`
(`make bench-families` writes bench/results_int8_families.md).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pipeline.bench import benchmark, cpu_model, int8_isa, library_versions
from pipeline.onnx_write import Normalized, export_onnx
from pipeline.parity import check_parity
from pipeline.predict import make_session, read_metadata
from pipeline.quantize import Recipe, family_of, quantize_int8, recipe_for

log = logging.getLogger(__name__)


def bench_student(
    student_pt: str | Path,
    fp32_onnx: str | Path,
    int8_onnx: str | Path | None = None,
    batch_sizes: list[int] = (1, 64),
    warmup: int = 5,
    runs: int = 30,
    threads: int = 0,
    provider: str = "auto",
    extra: dict[str, str | Path] | None = None,
) -> dict:
    """`benchmark` from files alone (for `make bench`): the student artifact, its exported models and any
    `extra` {runtime name: .onnx} (e.g. another INT8 recipe to compare against the default).

    Inputs are uniform random images in the model's metadata shape (latency does not depend on them).
    """
    from pipeline.checkpoint import load_model

    model, art = load_model(student_pt)
    meta = read_metadata(fp32_onnx)
    c, s = meta["in_channels"], meta["input_size"]
    images = np.random.default_rng(0).random((max(batch_sizes), c, s, s), dtype=np.float32)
    files = {"ort_fp32": fp32_onnx} | ({"ort_int8": int8_onnx} if int8_onnx else {}) | (extra or {})
    return benchmark(
        Normalized(model, art["mean"], art["std"]),
        files,
        images,
        list(batch_sizes),
        warmup,
        runs,
        threads,
        provider,
    )


FAMILY_ARCHS = (
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mobilenet_v2",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "resnet18",
    "regnet_y_400mf",
)

# INT8 / ORT fp32 p50 speed-ups the family recipes are meant to reach at batch 32 (96 px, 1 thread, untrained
# weights) on a 2-core x86 CPU whose integer dot-product instructions include VNNI; without VNNI (AVX2 only)
# ORT's integer kernels are slower and even resnet18 stays under its floor, so the floors do not apply there.
SPEEDUP_FLOORS_B32 = {
    "resnet18": 3.4,
    "mobilenet_v2": 2.3,
    "shufflenet_v2_x1_0": 1.65,
    "mobilenet_v3_small": 1.24,
    "efficientnet_b0": 1.2,
}


class _Logits(nn.Module):
    """Any torchvision classifier behind kdpipe's interface: model(x) -> logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_arch(arch: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """kdpipe's registered arch, else the torchvision model of that name (weights=None: nothing is
    downloaded)."""
    from pipeline.models import create_model, list_models

    if arch in list_models():
        return create_model(arch, num_classes, in_channels)
    import torchvision.models

    return _Logits(getattr(torchvision.models, arch)(weights=None, num_classes=num_classes))


def family_bench(
    arch: str,
    tmp: str | Path,
    size: int = 96,
    batch_sizes: tuple[int, ...] = (1, 32),
    warmup: int = 5,
    runs: int = 60,
    threads: int = 1,
    calib: int = 32,
    seed: int = 0,
    block: int = 2,
) -> dict:
    """One untrained `arch` at `size` px RGB: export, parity, INT8 with ORT's default QDQ (the floor: every
    node INT8, per-channel) and with the family recipe, then torch / ORT fp32 / both INT8 timed in one run."""

    torch.manual_seed(seed)
    model = build_arch(arch).eval()
    art = {
        "arch": arch,
        "class_names": [str(i) for i in range(10)],
        "input_size": size,
        "in_channels": 3,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    tmp = Path(tmp)
    f32, floor, rec = tmp / f"{arch}.onnx", tmp / f"{arch}.floor.int8.onnx", tmp / f"{arch}.int8.onnx"
    export_onnx(model, art, "0" * 64, f32)
    images = np.random.default_rng(seed).integers(
        0, 256, (max(calib, max(batch_sizes)), 3, size, size), dtype=np.uint8
    )
    wrapped = Normalized(model, art["mean"], art["std"]).eval()
    parity, _, _ = check_parity(
        wrapped, make_session(f32, threads)[0], torch.from_numpy(images[:16]), 1e-4, 1e-4
    )
    recipe = recipe_for(arch)
    quantize_int8(f32, floor, images, n=calib, recipe=Recipe("ort_default", keep=()))
    info = quantize_int8(f32, rec, images, n=calib, recipe=recipe)
    x = images.astype(np.float32) / np.float32(255.0)
    res = benchmark(
        wrapped,
        {"ort_fp32": f32, "ort_int8_floor": floor, "ort_int8": rec},
        x,
        list(batch_sizes),
        warmup,
        runs,
        threads,
        block=block,
        pause_s=0.0 if threads == 1 else 0.05,  # 1 thread: no workers to park
    )
    lat = res["latency"]
    ratio = {
        f"b{b}": {
            k: lat["ort_fp32"][f"b{b}"]["p50_ms"] / lat[k][f"b{b}"]["p50_ms"]
            for k in ("ort_int8", "ort_int8_floor")
        }
        for b in batch_sizes
    }
    return {
        "arch": arch,
        "family": family_of(arch),
        "recipe": recipe.name,
        "fp32_nodes": len(info["fp32_nodes"]),
        "size_ratio": rec.stat().st_size / f32.stat().st_size,
        "parity_max_abs_diff": parity["max_abs_diff"],
        "latency": lat,
        "int8_vs_fp32": ratio,
        "env": res["env"] | {"int8_isa": int8_isa(), "size": size, "calib": calib},
    }


def family_table(
    archs: tuple[str, ...] = FAMILY_ARCHS,
    runs: int = 60,
    warmup: int = 5,
    threads: int = 1,
    size: int = 96,
    batch_sizes: tuple[int, ...] = (1, 32),
    block: int = 2,
) -> list[dict]:
    """`family_bench` for each arch (p50 ratios from one run each); `family_markdown` renders them."""
    rows = []
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="kdpipe-fam-") as tmp:
            rows.append(family_bench(arch, tmp, size, batch_sizes, warmup, runs, threads, block=block))
        log.info("%s: INT8/fp32 %s", arch, rows[-1]["int8_vs_fp32"])
    return rows


def deployment_bench(
    name: str, models: Path, calib: np.ndarray, export: Any, runs: int, threads: list[int]
) -> dict:
    """`bench_student` of one exported student at each thread count, beside two other INT8 recipes
    (S8S8; the stem conv in INT8) quantized here, to show why the defaults are the defaults."""
    fp32, int8 = models / "export" / f"{name}.onnx", models / "export" / f"{name}.int8.onnx"
    if not fp32.is_file():
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="kdpipe-bench-") as tmp:
        recipes = {
            "ort_int8_s8s8": {"activation": "s8", "weight": "s8"},
            "ort_int8_int8_stem": {"fp32_stem": False},
        }
        extra = {k: Path(tmp) / f"{k}.onnx" for k in recipes} if int8.is_file() else {}
        for k, path in extra.items():
            quantize_int8(fp32, path, calib, export.calib_images, **recipes[k])
        for t in threads:  # small CNNs scale unevenly with threads: show each count
            out[f"{name}, {t or 'all'} thread(s)"] = bench_student(
                models / "students" / f"{name}.pt",
                fp32,
                int8 if int8.is_file() else None,
                export.batch_sizes,
                export.latency_warmup,
                runs,
                t,
                extra=extra,
            )
    return out


def _floor_cell(arch: str, batch: int, speedup: float) -> str:
    floor = SPEEDUP_FLOORS_B32.get(arch) if batch == 32 else None
    return "" if floor is None else f"{floor:.2f}x, {'met' if speedup >= floor else 'below'}"


def family_markdown(rows: list[dict]) -> str:
    """bench/results_int8_families.md from `family_table`'s rows (or the rows of its .json)."""
    lines = [
        "# INT8 per model family",
        "",
        "INT8 = the family's default recipe (`pipeline.quantize.RECIPES`); ORT default = ORT's own QDQ",
        "(every node INT8) on the same model in the same run; floor = the speed-up the recipe is meant to",
        "reach at batch 32 on an x86 CPU with VNNI (`pipeline.bench_families.SPEEDUP_FLOORS_B32`).",
        "",
        "| arch | family | recipe | batch | torch ms | ORT fp32 ms | INT8 ms | INT8 vs ORT fp32 | ORT "
        "default INT8 vs fp32 | floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lat = r["latency"]
        for k in lat["ort_fp32"]:
            up = r["int8_vs_fp32"][k]
            ms = [lat[rt][k]["p50_ms"] for rt in ("torch_fp32", "ort_fp32", "ort_int8")]
            lines.append(
                f"| {r['arch']} | {r['family']} | {r['recipe']} | {k[1:]} | "
                f"{ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} | "
                f"{up['ort_int8']:.2f}x | {up['ort_int8_floor']:.2f}x | "
                f"{_floor_cell(r['arch'], int(k[1:]), up['ort_int8'])} |"
            )
    env = rows[0]["env"] if rows else {"cpu": cpu_model(), "versions": library_versions()}
    v, isa, e = env["versions"], env.get("int8_isa"), lambda key: env.get(key, "?")
    cpu = f"{env['cpu']} ({isa})" if isa and isa not in env["cpu"] else env["cpu"]  # older rows: ISA apart
    lines += [
        "",
        f"Untrained weights, {e('size')}x{e('size')} RGB, {e('threads')} intra-op thread(s), p50 of "
        f"{e('runs')} timed runs per runtime and batch after {e('warmup')} warm-up runs, runtimes taking "
        f"turns in blocks of {e('block')}; {cpu}, "
        f"torch {v.get('torch', '?')}, onnxruntime {v.get('onnxruntime', '?')}. "
        f"INT8: U8S8 QDQ, calibration on {e('calib')} random images. Host load average at the end: "
        f"{', '.join(f'{a:.1f}' for a in env.get('load_average') or [])}.",
        "",
    ]
    return "\n".join(lines)
