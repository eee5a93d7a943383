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
from pipeline.predict import INPUT, OUTPUT, make_session, resolve_threads

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy")
LABELS = {
    "torch_fp32": "torch eager fp32",
    "ort_fp32": "ORT fp32",
    "ort_int8": "ORT INT8",
    "ort_int8_s8s8": "ORT INT8 S8S8",
    "ort_int8_int8_stem": "ORT INT8, stem conv INT8",
}


_ISA = {"avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX", "avx2": "AVX2"}


def int8_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's instructions that decide INT8 speed, e.g. "AVX512-VNNI, AMX" or "AVX2, no VNNI" ("" when
    /proc/cpuinfo cannot be read)."""
    try:
        line = next(x for x in Path(cpuinfo).read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    flags = set(line.split(":", 1)[1].split())
    have = [name for flag, name in _ISA.items() if flag in flags]
    if any("VNNI" in h for h in have):
        return ", ".join(h for h in have if h != "AVX2")
    return ", ".join([*have, "no VNNI"])


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name with its INT8 instructions, e.g. "AMD EPYC (AVX512-VNNI, AVX-VNNI)": one model
    name covers CPUs with and without VNNI, whose INT8 speed-ups differ up to 1.5x."""
    try:
        name = next(x for x in Path(cpuinfo).read_text().splitlines() if x.startswith("model name"))
        name = name.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    isa = int8_isa(cpuinfo)
    return f"{name} ({isa})" if isa else name


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
                f"{r['p99_ms']:.2f} | {r['images_per_s']:.0f} | {sp} |"
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
