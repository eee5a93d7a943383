"""bench: training-loop and deployment speed as ratios measured in one run -> bench/results.{md,json}; with
--families also INT8 vs fp32 per model family -> bench/results_int8_families.{md,json}."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import torch
import typer

from pipeline import checkpoint
from pipeline.bench import cpu_model, library_versions, markdown_table
from pipeline.bench_families import FAMILY_ARCHS, bench_student, family_table
from pipeline.checks import load_params
from pipeline.data.cache import load_prepared as load_data
from pipeline.quantize import quantize_int8
from pipeline.speed import run_training_bench
from stages import DATA, MODELS, command, say


@command("bench")
def bench(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    student: str = typer.Option("resnet8", help="student arch for the training benchmark"),
    teacher: str = typer.Option("resnet20", help="teacher arch for the online-KD benchmark"),
    reps: int = typer.Option(5, help="interleaved timed epochs per side"),
    runs: int = typer.Option(
        100, help="timed calls per runtime and batch size (blocks of 10, runtimes taking turns)"
    ),
    threads: list[int] = typer.Option(
        [1, 0], help="intra-op thread counts for the latency tables (0 = all cores)"
    ),
    families: bool = typer.Option(
        False, help="also time INT8 vs fp32 per model family (untrained, 96 px, 1 thread; ~15 min)"
    ),
    family_archs: list[str] = typer.Option(list(FAMILY_ARCHS), help="archs for --families"),
    family_runs: int = typer.Option(60, help="timed calls per runtime and batch size for --families"),
    out: Path = typer.Option(Path("bench"), help="output folder"),
) -> None:
    """Time fit vs a plain PyTorch loop, KD epochs vs scratch, and ORT INT8 vs torch fp32 on the exported
    students."""
    p = load_params(params)
    if families:
        write_family_table(out, tuple(family_archs), family_runs)
    torch.set_num_threads(p.base.threads or torch.get_num_threads())
    train = run_training_bench(data := load_data(DATA), student, teacher, batch_size=128, reps=reps)
    deploy = {}
    for name in p.export.students:
        fp32, int8 = MODELS / "export" / f"{name}.onnx", MODELS / "export" / f"{name}.int8.onnx"
        with tempfile.TemporaryDirectory(prefix="kdpipe-bench-") as tmp:
            recipes = {
                "ort_int8_s8s8": {"activation": "s8", "weight": "s8"},
                "ort_int8_int8_stem": {"fp32_stem": False},
            }
            extra = {k: Path(tmp) / f"{k}.onnx" for k in recipes} if fp32.is_file() and int8.is_file() else {}
            for (
                k,
                path,
            ) in extra.items():  # alternative INT8 recipes, to show why the defaults are the defaults
                quantize_int8(fp32, path, data["train_x"], p.export.calib_images, **recipes[k])
            for t in (
                threads if fp32.is_file() else []
            ):  # small CNNs scale unevenly with threads: show each count
                deploy[f"{name}, {t or 'all'} thread(s)"] = bench_student(
                    MODELS / "students" / f"{name}.pt",
                    fp32,
                    int8 if int8.is_file() else None,
                    p.export.batch_sizes,
                    p.export.latency_warmup,
                    runs,
                    t,
                    extra=extra,
                )
    env = {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }

    def r(k):
        return train[k]

    lines = [
        "# kdpipe benchmarks",
        "",
        f"{env['cpu']}, {env['torch_threads']} torch threads, torch {env['versions'].get('torch')}; "
        f"{train['images']} training images, batch {train['batch_size']}, student {student}, teacher "
        f"{teacher}; "
        f"median of {reps} interleaved epochs per side after one warm-up each.",
        "",
        "| comparison | ratio (median) | min–max | A s/epoch | B s/epoch | goal |",
        "|---|---:|---:|---:|---:|---|",
        f"| `fit` / plain PyTorch loop | {r('fit_vs_plain')['ratio']:.3f} | "
        f"{r('fit_vs_plain')['ratio_min']:.2f}–{r('fit_vs_plain')['ratio_max']:.2f} | "
        f"{r('fit_vs_plain')['a_s']:.2f} | {r('fit_vs_plain')['b_s']:.2f} | ≤ 1.05 |",
        f"| KD cached targets / scratch | {r('kd_cached_vs_scratch')['ratio']:.3f} | "
        f"{r('kd_cached_vs_scratch')['ratio_min']:.2f}–{r('kd_cached_vs_scratch')['ratio_max']:.2f} | "
        f"{r('kd_cached_vs_scratch')['a_s']:.2f} | {r('kd_cached_vs_scratch')['b_s']:.2f} | ≤ 1.15 |",
        f"| KD online teacher / scratch | {r('kd_online_vs_scratch')['ratio']:.3f} | "
        f"{r('kd_online_vs_scratch')['ratio_min']:.2f}–{r('kd_online_vs_scratch')['ratio_max']:.2f} | "
        f"{r('kd_online_vs_scratch')['a_s']:.2f} | {r('kd_online_vs_scratch')['b_s']:.2f} | reported |",
        "",
    ]
    for name, res in deploy.items():
        lines += [markdown_table(res, f"Deployment latency: {name}"), ""]
    if not deploy:
        lines += ["(no exported student found: run `dvc repro` first for the deployment figures)", ""]
    checkpoint.atomic_write_text(
        out / "results.json", json.dumps({"training": train, "deployment": deploy, "env": env}, indent=2)
    )
    checkpoint.atomic_write_text(out / "results.md", "\n".join(lines))
    say("\n".join(lines))


def write_family_table(out: Path, archs: tuple[str, ...], runs: int) -> None:
    """bench/results_int8_families.{md,json}: torch / ORT fp32 / INT8 (family recipe and ORT's default) per
    arch."""
    text, rows = family_table(archs, runs=runs)
    md = [
        "# INT8 per model family",
        "",
        "INT8 = the family's default recipe (`pipeline.quantize.RECIPES`); the last column is",
        "ORT's default QDQ (every node INT8) on the same model in the same run, for comparison.",
        "",
        text,
        "",
    ]
    checkpoint.atomic_write_text(out / "results_int8_families.json", json.dumps(rows, indent=2))
    checkpoint.atomic_write_text(out / "results_int8_families.md", "\n".join(md))
    say("\n".join(md))
