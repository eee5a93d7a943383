"""End to end: the real CLI and a real `dvc repro` in a temporary copy of the repo, with a tiny profile."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = Path(__file__).with_name("tiny_profile.yaml")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the project's files (what a clone has), its own git repo, the tiny profile as params.yaml."""
    dst = tmp_path_factory.mktemp("kdpipe")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.split("/")[0] in ("results", "models", "state", "data", "dvc.lock", "bench") or not (ROOT / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    shutil.copy2(TINY, dst / "params.yaml")
    run([sys.executable, "-m", "stages", "dvc-yaml"], dst)  # the stage file for this profile's models
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "init"], dst)
    return dst


@pytest.mark.e2e
def test_dvc_repro_runs_every_stage_and_is_then_up_to_date(repo):
    out = run([str(BIN / "dvc"), "repro"], repo)
    profile = yaml.safe_load(TINY.read_text())
    for t in profile["teachers"]:
        assert (repo / "models" / "teachers" / f"{t}.pt").is_file()
        assert json.loads((repo / "results" / "train-teacher" / t / "metrics.json").read_text())["val"]["acc"] >= 0
    for s in profile["students"]:
        assert (repo / "models" / "students" / f"{s}.pt").is_file(), out.stdout[-2000:]
    evaluation = json.loads((repo / "results" / "evaluate" / "metrics.json").read_text())
    for name in [*profile["teachers"], *profile["students"], *profile["patriarchs"], *profile["generations"]]:
        assert 0.0 <= evaluation[name]["top1"] <= 1.0
    report = (repo / "results" / "report.md").read_text()
    assert "| kd |" in report and (repo / "results" / "plots" / "curves.png").is_file()
    shown = run([str(BIN / "dvc"), "metrics", "show", "--json"], repo).stdout
    assert "results/evaluate/metrics.json" in shown and "error" not in shown.lower()
    again = run([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout
    status = run([str(BIN / "dvc"), "status"], repo).stdout
    assert "changed" not in status


@pytest.mark.e2e
def test_bench_writes_ratios_and_latency_tables(repo):
    """`make bench`'s command on the tiny run's outputs: every ratio measured, one latency table per thread count."""
    run([sys.executable, "-m", "stages", "bench", "--reps", "1", "--runs", "3", "--threads", "1", "--threads", "0", "--out", "bench"], repo)
    res = json.loads((repo / "bench" / "results.json").read_text())
    for key in ("fit_vs_plain", "kd_cached_vs_scratch", "kd_online_vs_scratch"):
        assert res["training"][key]["ratio"] > 0 and res["training"][key]["a_s"] > 0, key
    assert sorted(res["deployment"]) == ["kd, 1 thread(s)", "kd, all thread(s)"]
    one = res["deployment"]["kd, 1 thread(s)"]
    assert one["env"]["threads"] == 1 and set(one["latency"]) == {"torch_fp32", "ort_fp32", "ort_int8", "ort_int8_s8s8", "ort_int8_int8_stem"}
    assert "| `fit` / plain PyTorch loop |" in (repo / "bench" / "results.md").read_text()


@pytest.mark.e2e
def test_exp_run_sets_a_student_parameter(repo):
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "reference run"], repo)
    res = run([str(BIN / "dvc"), "exp", "run", "-S", "students.kd.kd.temperature=2", "-n", "t2"], repo)
    assert "distill-kd" in res.stdout and "train-teacher-" not in res.stdout.split("Running stage")[-1]
    ran = [ln for ln in res.stdout.splitlines() if ln.startswith("Running stage")]
    assert all("scratch" not in ln and "train-teacher" not in ln for ln in ran), ran
    shown = run([str(BIN / "dvc"), "exp", "show", "--no-pager", "--json"], repo).stdout
    assert "t2" in shown
