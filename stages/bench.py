"""bench: training-loop and deployment speed as ratios measured in one run -> bench/results.{md,json}; with
--families also INT8 vs fp32 per model family -> bench/results_int8_families.{md,json}; with --loader the
streaming loader's images/s against mobilenet_v3_small training steps -> bench/results_loader.{md,json}."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import typer

from pipeline import checkpoint
from pipeline.bench import cpu_model, library_versions
from pipeline.bench_families import FAMILY_ARCHS, family_markdown, family_table
from pipeline.bench_run import main_bench
from pipeline.checks import load_params
from pipeline.data.bench import loader_markdown, throughput
from pipeline.data.cache import load_prepared as load_data
from stages import DATA, MODELS, command, say


@command("bench")
def bench(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    student: str = typer.Option("resnet8", help="student arch for the training benchmark"),
    teacher: str = typer.Option("resnet20", help="teacher arch for the online-KD benchmark"),
    reps: int = typer.Option(5, help="interleaved timed epochs per side"),
    runs: int = typer.Option(100, help="timed calls per runtime and batch size, in blocks taking turns"),
    threads: list[int] = typer.Option([1, 0], help="intra-op threads of the latency tables (0 = all)"),
    families: bool = typer.Option(False, help="also INT8 vs fp32 per model family (96 px; ~4 min)"),
    family_archs: list[str] = typer.Option(list(FAMILY_ARCHS), help="archs for --families"),
    family_runs: int = typer.Option(60, help="timed calls per runtime and batch size for --families"),
    loader: bool = typer.Option(False, help="also the streaming loader vs training (generated PNGs)"),
    loader_images: int = typer.Option(20000, help="images generated for --loader"),
    loader_size: int = typer.Option(96, help="image size (px) for --loader"),
    out: Path = typer.Option(Path("bench"), help="output folder"),
    main: bool = typer.Option(True, "--main/--no-main", help="fit, KD and latency (needs make demo's files)"),
) -> None:
    """Time fit vs a plain PyTorch loop, KD epochs vs scratch, and ORT INT8 vs torch fp32 on the exported
    students; optionally INT8 per model family and the streaming loader against training."""
    p = load_params(params)
    if families:  # torch, ORT fp32, INT8 (family recipe, ORT default) per arch
        rows = family_table(tuple(family_archs), runs=family_runs)
        write(out, "results_int8_families", rows, family_markdown(rows))
    if loader:  # one streamed epoch of generated PNGs vs mobilenet_v3_small training steps
        res = throughput(loader_images, loader_size, workers=min(4, os.cpu_count() or 1))
        write(out, "results_loader", res | {"cpu": cpu_model(), **library_versions()}, loader_markdown(res))
    if main:
        torch.set_num_threads(p.base.threads or torch.get_num_threads())
        write(out, "results", *main_bench(p, load_data(DATA), MODELS, student, teacher, reps, runs, threads))


def write(out: Path, stem: str, obj: object, md: str) -> None:
    """out/<stem>.json and out/<stem>.md, printed too."""
    checkpoint.atomic_write_text(out / f"{stem}.json", json.dumps(obj, indent=2))
    checkpoint.atomic_write_text(out / f"{stem}.md", md)
    say(md)
