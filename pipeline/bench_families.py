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

from pipeline.bench import benchmark, cpu_model, library_versions
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
        pause_s=0.0 if threads == 1 else 0.05,
    )  # 1 thread: no workers to park
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
        "env": res["env"],
    }


def family_table(
    archs: tuple[str, ...] = FAMILY_ARCHS,
    runs: int = 60,
    warmup: int = 5,
    threads: int = 1,
    size: int = 96,
    batch_sizes: tuple[int, ...] = (1, 32),
    block: int = 2,
) -> tuple[str, list[dict]]:
    """`family_bench` for each arch; returns (markdown table, raw results). p50 ratios come from one run
    each."""
    import tempfile

    rows = []
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="kdpipe-fam-") as tmp:
            rows.append(family_bench(arch, tmp, size, batch_sizes, warmup, runs, threads, block=block))
        log.info("%s: INT8/fp32 %s", arch, rows[-1]["int8_vs_fp32"])
    head = [
        "| arch | family | recipe | batch | torch ms | ORT fp32 ms | INT8 ms | INT8 vs ORT fp32 | ORT "
        "default INT8 vs fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for b in batch_sizes:
            k, lat = f"b{b}", r["latency"]
            head.append(
                f"| {r['arch']} | {r['family']} | {r['recipe']} | {b} | {lat['torch_fp32'][k]['p50_ms']:.2f} "
                "| "
                f"{lat['ort_fp32'][k]['p50_ms']:.2f} | {lat['ort_int8'][k]['p50_ms']:.2f} | "
                f"{r['int8_vs_fp32'][k]['ort_int8']:.2f}x | {r['int8_vs_fp32'][k]['ort_int8_floor']:.2f}x |"
            )
    env = rows[0]["env"] if rows else {"cpu": cpu_model(), "versions": library_versions()}
    v = env["versions"]
    head += [
        "",
        (
            f"Untrained weights, {size}x{size} RGB, {threads} intra-op thread(s), p50 of {runs} timed runs "
            "per runtime "
            f"and batch after {warmup} warm-up runs, runtimes taking turns in blocks of {block}; "
            f"{env['cpu']}, torch "
            f"{v.get('torch', '?')}, onnxruntime {v.get('onnxruntime', '?')}. INT8: U8S8 QDQ, calibration on "
            "32 random images. Host load average at the end: "
            f"{', '.join(f'{a:.1f}' for a in env.get('load_average') or [])}."
        ),
    ]
    return "\n".join(head), rows


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


def _ratio_row(label: str, r: dict, goal: str) -> str:
    return (
        f"| {label} | {r['ratio']:.3f} | {r['ratio_min']:.2f}–{r['ratio_max']:.2f} | {r['a_s']:.2f} | "
        f"{r['b_s']:.2f} | {goal} |"
    )


def training_markdown(train: dict, env: dict, student: str, teacher: str, reps: int) -> list[str]:
    """The head of bench/results.md: the training-loop ratios, measured in one run."""
    return [
        "# kdpipe benchmarks",
        "",
        f"{env['cpu']}, {env['torch_threads']} torch threads, torch {env['versions'].get('torch')}; "
        f"{train['images']} training images, batch {train['batch_size']}, student {student}, "
        f"teacher {teacher}; "
        f"median of {reps} interleaved epochs per side after one warm-up each.",
        "",
        "| comparison | ratio (median) | min–max | A s/epoch | B s/epoch | goal |",
        "|---|---:|---:|---:|---:|---|",
        _ratio_row("`fit` / plain PyTorch loop", train["fit_vs_plain"], "≤ 1.05"),
        _ratio_row("KD cached targets / scratch", train["kd_cached_vs_scratch"], "≤ 1.15"),
        _ratio_row("KD online teacher / scratch", train["kd_online_vs_scratch"], "reported"),
        "",
    ]


def family_markdown(table: str) -> str:
    """bench/results_int8_families.md around `family_table`'s table."""
    return "\n".join(
        [
            "# INT8 per model family",
            "",
            "INT8 = the family's default recipe (`pipeline.quantize.RECIPES`); the last column is",
            "ORT's default QDQ (every node INT8) on the same model in the same run, for comparison.",
            "",
            table,
            "",
        ]
    )
