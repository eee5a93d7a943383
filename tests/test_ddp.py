"""DDP under torchrun: 2 gloo processes on CPU match a 1-process run of the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

PROFILE = """
base: {seed: 0, device: cpu}
data: {source: synthetic, val_size: 128, synthetic: {train: 640, test: 64}, augment: {pad: 1}}
teachers:
  t1: {arch: resnet8, optim: {epochs: 3, batch_size: 64, lr: 0.05}}
patriarchs: {}
students: {}
generations: {}
probes: {epochs: 1, batch_size: 64}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH: the processes run in a scratch directory and must import this checkout, not an installed
    # copy
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def test_two_process_gloo_matches_one_process(tmp_path):
    (tmp_path / "params.yaml").write_text(PROFILE)
    py = [sys.executable, "-m"]
    run([*py, "stages", "prepare-data"], tmp_path)
    single = run([*py, "stages", "train-teacher", "t1"], tmp_path)
    ref = json.loads((tmp_path / "results/train-teacher/t1/metrics.json").read_text())
    for d in ("models", "state", "results/train-teacher"):
        subprocess.run(["rm", "-rf", str(tmp_path / d)], check=True)
    ddp = run(
        [
            *py,
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "stages",
            "train-teacher",
            "t1",
        ],
        tmp_path,
    )
    got = json.loads((tmp_path / "results/train-teacher/t1/metrics.json").read_text())
    # only rank 0 logs and writes: one line per epoch, one result line, one artifact, no stray temp files
    assert ddp.stderr.count("epoch 3/3") == 1 and ddp.stdout.count("val top-1") == 1, ddp.stderr[-1500:]
    assert "rank 0 of 2, backend gloo" in ddp.stderr
    assert sorted(p.name for p in (tmp_path / "models/teachers").iterdir()) == ["t1.pt"]
    # same global batch (2 x 32 vs 64): per-rank BatchNorm statistics are the only difference
    assert abs(got["val"]["acc"] - ref["val"]["acc"]) <= 0.08, (got["val"], ref["val"], single.stdout)
    assert abs(got["train"]["loss"] - ref["train"]["loss"]) <= 0.25 * ref["train"]["loss"] + 0.02

    # a knowledge job under torchrun: rank 0 alone measures the probes and writes the artifact and metrics
    probes = run(
        [
            *py,
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "stages",
            "probe-teachers",
        ],
        tmp_path,
    )
    assert probes.stdout.count("probe-teachers: stage[-3]=t1") == 1, probes.stderr[-1500:]
    assert (
        json.loads((tmp_path / "results/probe-teachers/metrics.json").read_text())["choice_teacher"][
            "stage[-1]"
        ]
        == "t1"
    )
