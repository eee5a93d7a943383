"""Latency and throughput of torch eager fp32, ORT fp32 and ORT INT8.

Per batch size: `warmup` untimed runs of each runtime, then `runs` timed calls of each in blocks
that take turns (`time_runs`), time.perf_counter; p50/p90/p99 in ms and images/s at the p50. torch
and ORT get the same intra-op thread count (inter-op 1), recorded with the provider actually used,
the CPU model and library versions; torch is timed with glibc's allocator steadied (pipeline.allocator).
`benchmark` is what the export stage calls; `bench_student` loads everything from files (for a
`make bench` script); `markdown_table` renders the result for README/report.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.allocator import steady_allocator
from pipeline.predict import INPUT, OUTPUT, make_session, read_metadata, resolve_threads

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy")
LABELS = {
    "torch_fp32": "torch eager fp32",
    "ort_fp32": "ORT fp32",
    "ort_int8": "ORT INT8",
    "ort_int8_s8s8": "ORT INT8 S8S8",
    "ort_int8_int8_stem": "ORT INT8, stem conv INT8",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            continue
    return out


def time_runs(
    fns: dict[str, Callable[[], object]],
    warmup: int,
    runs: int,
    sync: Callable[[], None] = lambda: None,
    block: int = 10,
    pause_s: float = 0.05,
) -> dict:
    """Time `runs` calls of each fn, in blocks of `block` consecutive calls that take turns (A A A, B B B,
    C C C, then B.., C.., A..: the order rotates every round), so drift and neighbours' load hit every
    runtime alike while each runs as in service (warm caches, ORT workers spinning between calls).
    Each block follows a `pause_s` sleep and one untimed call: the pause lets the previous runtime's
    spinning workers park instead of taking this one's cores. Returns {name: percentiles in ms}."""
    names, runs, block = list(fns), max(runs, 1), max(block, 1)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(-(-runs // block)):  # ceil(runs / block) rounds; the last block may be short
        n = min(block, runs - r * block)
        for k in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(pause_s)
            fns[k]()
            sync()
            for _ in range(n):
                t0 = time.perf_counter()
                fns[k]()
                sync()
                times[k].append(time.perf_counter() - t0)
    out = {}
    for k, t in times.items():
        p50, p90, p99 = np.percentile(np.array(t) * 1e3, [50, 90, 99])
        out[k] = {
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "mean_ms": float(np.mean(t) * 1e3),
            "runs": len(t),
        }
    return out


def _batch(images: np.ndarray, b: int) -> np.ndarray:
    """`b` real images (repeated if fewer are given): content matters little for latency, but is realistic."""
    return np.ascontiguousarray(images[np.arange(b) % len(images)], dtype=np.float32)


def benchmark(
    torch_model: nn.Module | None,
    onnx_files: dict[str, str | Path],
    images: np.ndarray,
    batch_sizes: list[int],
    warmup: int = 5,
    runs: int = 30,
    threads: int = 0,
    provider: str = "auto",
    block: int = 10,
    pause_s: float = 0.05,
) -> dict:
    """Latency of `torch_model` (taking `images`' format, float32 [0, 1] NCHW) and each named .onnx file;
    `block` and `pause_s` go to `time_runs` (short blocks suit a host whose cores other jobs share).

    Returns {"latency": {runtime: {"b<batch>": {p50_ms, p90_ms, p99_ms, mean_ms, runs, images_per_s}}},
    "speedup": {"b<batch>": {"<runtime>_vs_torch_fp32": p50 ratio}}, "env": {...}}.
    """
    n = resolve_threads(threads)
    tuned = steady_allocator()
    sessions = {
        name: make_session(path, n, provider) for name, path in onnx_files.items()
    }  # ORT's default: spinning on
    providers = {name: used for name, (_, used) in sessions.items()}
    torch_device = (
        "cuda" if "CUDAExecutionProvider" in providers.values() and torch.cuda.is_available() else "cpu"
    )
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    lat: dict[str, dict] = {}
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    if torch_model is not None:
        torch_model.eval().to(torch_device)
    try:
        for b in batch_sizes:
            x = _batch(images, b)
            xt = torch.from_numpy(x).to(torch_device)
            fns = {
                name: (lambda s=sess, x=x: s.run([OUTPUT], {INPUT: x}))
                for name, (sess, _) in sessions.items()
            }
            if torch_model is not None:
                fns = {"torch_fp32": torch.no_grad()(lambda xt=xt: torch_model(xt))} | fns
            for name, r in time_runs(fns, warmup, runs, sync, block, pause_s).items():
                lat.setdefault(name, {})[f"b{b}"] = r
    finally:
        torch.set_num_threads(old)
        if torch_model is not None:
            torch_model.cpu()
    for rt in lat.values():
        for key, r in rt.items():
            r["images_per_s"] = int(key[1:]) / (r["p50_ms"] / 1e3)
    speedup = {}
    if "torch_fp32" in lat:
        for b in batch_sizes:
            ref = lat["torch_fp32"][f"b{b}"]["p50_ms"]
            speedup[f"b{b}"] = {
                f"{name}_vs_torch_fp32": ref / lat[name][f"b{b}"]["p50_ms"] for name in sessions
            }
    env = {
        "cpu": cpu_model(),
        "threads": n,
        "inter_op_threads": 1,
        "ort_spinning": True,
        "steady_allocator": tuned,
        "torch_device": torch_device,
        "providers": providers,
        "warmup": warmup,
        "runs": runs,
        "block": block,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": library_versions(),
    }
    log.info(
        "latency (p50 ms): %s",
        "; ".join(
            f"{k} " + ", ".join(f"{b}={v['p50_ms']:.2f}" for b, v in r.items()) for k, r in lat.items()
        ),
    )
    return {"latency": lat, "speedup": speedup, "env": env}


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
    from pipeline.export import Normalized

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


def markdown_table(result: dict, title: str = "") -> str:
    """A README-ready table: one row per (runtime, batch); p50/p90/p99 ms, images/s, speed-up vs torch."""
    lines = [f"**{title}**", ""] if title else []
    lines += [
        "| runtime | batch | p50 ms | p90 ms | p99 ms | images/s | p50 speed-up vs torch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in result["latency"].items():
        for key, r in rows.items():
            ref = result["latency"].get("torch_fp32", {}).get(key)
            sp = f"{ref['p50_ms'] / r['p50_ms']:.2f}x" if ref else "-"
            lines.append(
                f"| {LABELS.get(name, name)} | {key[1:]} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | "
                f"{r['images_per_s']:.0f} | {sp} |"
            )
    env = result["env"]
    v = env["versions"]
    lines += [
        "",
        f"{env['cpu']}, {env['threads']} intra-op threads, ORT provider "
        f"{', '.join(sorted(set(env['providers'].values())))}, "
        f"torch {v.get('torch', '?')}, onnxruntime {v.get('onnxruntime', v.get('onnxruntime-gpu', '?'))}; "
        f"{env['warmup']} warm-up + {env['runs']} timed runs each.",
    ]
    return "\n".join(lines)


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
    from pipeline.export import Normalized, check_parity, export_onnx
    from pipeline.quantize import Recipe, family_of, quantize_int8, recipe_for

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
