"""End to end: the real CLI and a real `dvc repro` in a temporary copy of the repo, with a tiny profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = Path(__file__).with_name("tiny_profile.yaml")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and res.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return res


def copy_project(dst: Path) -> Path:
    """Copy the project's files (what a clone has, without run outputs) to `dst`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (
            f.split("/")[0] in ("results", "models", "state", "data", "dvc.lock", "bench")
            or not (ROOT / f).is_file()
        ):
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return dst


def commit_project(dst: Path) -> Path:
    """Generate the stage file for `dst/params.yaml` and make `dst` its own git repo."""
    run([sys.executable, "-m", "stages", "dvc-yaml"], dst)  # the stage file for this profile's models
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(cmd, dst)
    return dst


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the project, its own git repo, the tiny profile as params.yaml."""
    dst = copy_project(tmp_path_factory.mktemp("kdpipe"))
    shutil.copy2(TINY, dst / "params.yaml")
    return commit_project(dst)


def ran_stages(stdout: str) -> set[str]:
    """Names of the stages a `dvc repro` / `dvc exp run` ran (from its "Running stage 'x':" lines)."""
    return {ln.split("'")[1] for ln in stdout.splitlines() if ln.startswith("Running stage")}


@pytest.mark.e2e
def test_dvc_repro_runs_every_stage_and_is_then_up_to_date(repo):
    out = run([str(BIN / "dvc"), "repro"], repo)
    profile = yaml.safe_load(TINY.read_text())
    for t in profile["teachers"]:
        assert (repo / "models" / "teachers" / f"{t}.pt").is_file()
        assert (
            json.loads((repo / "results" / "train-teacher" / t / "metrics.json").read_text())["val"]["acc"]
            >= 0
        )
    for s in profile["students"]:
        assert (repo / "models" / "students" / f"{s}.pt").is_file(), out.stdout[-2000:]
    accuracy = json.loads((repo / "results" / "metrics" / "accuracy.json").read_text())
    for name in [*profile["teachers"], *profile["students"], *profile["patriarchs"], *profile["generations"]]:
        assert 0.0 <= accuracy[name]["top1"] <= 1.0
    val = torch.load(repo / "models" / "students" / "kd.pt", weights_only=True)["metrics"]["val/acc"]
    assert accuracy["kd"]["val_top1"] == round(val, 4)  # what a sweep selects on, beside the test figures
    report = (repo / "results" / "report.md").read_text()
    assert "| kd |" in report and (repo / "results" / "plots" / "students.png").is_file()
    shown = run([str(BIN / "dvc"), "metrics", "show", "--json"], repo).stdout
    assert "results/metrics/accuracy.json" in shown and "error" not in shown.lower()
    again = run([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout
    status = run([str(BIN / "dvc"), "status"], repo).stdout
    assert "changed" not in status
    from dvc.repo import Repo

    artifacts = Repo(str(repo)).artifacts.read()["dvc.yaml"]  # DVC's model registry knows every model
    assert {"t1", "kd", "g2", "kd-onnx", "kd-int8"} <= set(artifacts) and artifacts["kd"].type == "model"


def lock_models(project: Path) -> dict[str, str]:
    """md5 of every model artifact and knowledge file recorded in `project`'s dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        o["path"]: o["md5"]
        for s in lock.values()
        for o in s.get("outs", [])
        if o["path"].startswith("models/")
    }


@pytest.mark.e2e
def test_repro_parallel_records_the_same_artifacts_as_dvc_repro(repo, tmp_path):
    # `repo` has just been through a plain `dvc repro`; a second copy runs two stages at a time instead
    other = copy_project(tmp_path)
    shutil.copy2(TINY, other / "params.yaml")
    commit_project(other)
    out = run([str(BIN / "kdpipe"), "repro-parallel", "--jobs", "2"], other)
    assert "ran and recorded 21 stage(s)" in out.stdout
    assert "up to date" in run([str(BIN / "dvc"), "status"], other).stdout
    assert "Running stage" not in run([str(BIN / "dvc"), "repro"], other).stdout
    assert lock_models(other) == lock_models(repo) and len(lock_models(repo)) > 10  # byte-identical models
    assert "pipeline up to date" in run([str(BIN / "kdpipe"), "repro-parallel"], other).stdout


@pytest.mark.e2e
def test_editing_the_report_code_reruns_only_the_report(repo):
    code = repo / "pipeline" / "report.py"
    original = code.read_text()
    code.write_text(original + "\n# an edit\n")
    try:
        status = run([str(BIN / "dvc"), "status"], repo).stdout
        changed = {
            ln.rstrip(":").strip() for ln in status.splitlines() if ln and not ln.startswith((" ", "\t"))
        }
        assert changed == {"report"}, status
    finally:
        code.write_text(original)


@pytest.mark.e2e
def test_changing_one_teacher_retrains_exactly_its_students(repo):
    params = repo / "params.yaml"
    original = params.read_text()
    params.write_text(
        original.replace(
            "t2: {arch: resnet8, seed: 2, optim: {epochs: 2", "t2: {arch: resnet8, seed: 2, optim: {epochs: 1"
        )
    )
    try:
        ran = ran_stages(run([str(BIN / "dvc"), "repro"], repo).stdout)
        trained = {
            s for s in ran if s.startswith(("train-teacher-", "distill-", "refine-", "pretrain-", "infer-"))
        }
        # t2's students, nothing else
        assert trained == {"train-teacher-t2", "distill-kd", "distill-gpac"}, ran
        assert "probe-teachers" in ran and "export-kd" in ran
    finally:
        params.write_text(original)
    run([str(BIN / "dvc"), "repro"], repo)  # back to the reference run for the tests below


@pytest.mark.e2e
def test_bench_writes_ratios_and_latency_tables(repo):
    """`make bench`'s command on the tiny run's outputs: every ratio measured, one latency table per thread
    count."""
    run(
        [
            sys.executable,
            "-m",
            "stages",
            "bench",
            "--reps",
            "1",
            "--runs",
            "3",
            "--threads",
            "1",
            "--threads",
            "0",
            "--out",
            "bench",
        ],
        repo,
    )
    res = json.loads((repo / "bench" / "results.json").read_text())
    for key in ("fit_vs_plain", "kd_cached_vs_scratch", "kd_online_vs_scratch"):
        assert res["training"][key]["ratio"] > 0 and res["training"][key]["a_s"] > 0, key
    assert sorted(res["deployment"]) == ["kd, 1 thread(s)", "kd, all thread(s)"]
    one = res["deployment"]["kd, 1 thread(s)"]
    assert one["env"]["threads"] == 1 and set(one["latency"]) == {
        "torch_fp32",
        "ort_fp32",
        "ort_int8",
        "ort_int8_s8s8",
        "ort_int8_int8_stem",
    }
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


SECOND = """
base: {seed: 0, device: cpu}
data: {source: synthetic, val_size: 32, synthetic: {train: 160, test: 64, channels: 3, classes: 3}}
teachers:
  big: {arch: resnet14, optim: {epochs: 1, batch_size: 64}}
students:
  small: {arch: resnet8, method: kd, teachers: [big], optim: {epochs: 1, batch_size: 64}}
"""


@pytest.mark.e2e
def test_a_profile_switch_needs_one_command_and_leaves_no_leftovers(repo):
    """Another profile (3 channels, 3 classes, other model names) after the tiny run: `dvc repro` first stops
    with one line naming the fix and deletes nothing; after `kdpipe dvc-yaml` it runs, and the report and
    metrics show only the new models."""
    (repo / "params.yaml").write_text(SECOND)
    stale = run([str(BIN / "dvc"), "repro"], repo, check=False)
    assert stale.returncode != 0 and "kdpipe dvc-yaml" in stale.stderr + stale.stdout
    assert (repo / "models" / "students" / "kd.pt").is_file()  # nothing of the earlier run was deleted
    run([sys.executable, "-m", "stages", "dvc-yaml"], repo)
    run([str(BIN / "dvc"), "repro"], repo)
    accuracy = json.loads((repo / "results" / "metrics" / "accuracy.json").read_text())
    assert set(accuracy) == {"big", "small"}
    report = (repo / "results" / "report.md").read_text()
    assert "| small |" in report and not any(
        old in report for old in ("kd_cached", "scratch", "gpac", "ie_kd")
    )
