"""`make bench`'s main table: `fit` vs a plain loop, KD epochs vs scratch, and the exported students' latency
under torch, ORT fp32 and ORT INT8, assembled into bench/results.{json,md}'s content."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from pipeline.bench import cpu_model, library_versions, markdown_table
from pipeline.bench_families import deployment_bench
from pipeline.params import Params
from pipeline.speed import run_training_bench


def main_bench(
    p: Params, data: dict, models: Path, student: str, teacher: str, reps: int, runs: int, threads: list[int]
) -> tuple[dict, str]:
    """(results.json's object, results.md's text) for the prepared `data` and the exported students."""
    train = run_training_bench(data, student, teacher, batch_size=128, reps=reps)
    deploy = {}
    for name in p.export.students:  # latency of each exported student, at each thread count
        deploy |= deployment_bench(name, models, data["train_x"], p.export, runs, threads)
    env = {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
    lines = training_markdown(train, env, student, teacher, reps)
    for name, res in deploy.items():
        lines += [markdown_table(res, f"Deployment latency: {name}"), ""]
    if not deploy:
        lines += ["(no exported student found: run `dvc repro` first for the deployment figures)", ""]
    return {"training": train, "deployment": deploy, "env": env}, "\n".join(lines)


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
        f"teacher {teacher}; median of {reps} interleaved epochs per side after one warm-up each.",
        "",
        "| comparison | ratio (median) | min–max | A s/epoch | B s/epoch | goal |",
        "|---|---:|---:|---:|---:|---|",
        _ratio_row("`fit` / plain PyTorch loop", train["fit_vs_plain"], "≤ 1.05"),
        _ratio_row("KD cached targets / scratch", train["kd_cached_vs_scratch"], "≤ 1.15"),
        _ratio_row("KD online teacher / scratch", train["kd_online_vs_scratch"], "reported"),
        "",
    ]
