"""Faults a real `dvc repro` must survive: kill -9 of its process group at two points, a kill at the atomic
rename, a kill during export (INT8 calibration) and report, and a second `dvc repro` started beside a first.

Each killed run is re-run and compared with an uninterrupted run of the same profile in another copy: the
artifacts must come out byte-identical (and so tensor-identical) and DVC must then report nothing to do.
The tests share one killed copy; each starts by completing its pipeline (a no-op after the one before).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from test_e2e import BIN, commit_project, copy_project, ran_stages, run

from pipeline import checkpoint

OPTIM = {"batch_size": 32, "lr": 0.05}
PROFILE = {
    "base": {"seed": 0, "device": "cpu"},
    "data": {"source": "synthetic", "val_size": 64, "synthetic": {"train": 320, "test": 128}},
    "teachers": {"t1": {"arch": "resnet8", "seed": 1, "optim": {"epochs": 4, **OPTIM}}},
    "students": {
        "scratch": {"arch": "resnet8", "optim": {"epochs": 3, **OPTIM}},
        "kd": {"arch": "resnet8", "method": "kd", "teachers": ["t1"], "optim": {"epochs": 4, **OPTIM}},
    },
    "evaluate": {"batch_size": 256},
    "export": {"students": ["kd"], "calib_images": 64, "latency_runs": 3, "latency_warmup": 1},
}
MODELS = ("teachers/t1", "students/scratch", "students/kd")
DVC = str(BIN / "dvc")
# os.replace wrapped to SIGKILL the process just before or just after renaming onto a path containing argv[1]
KILL_AT_RENAME = """
import os, runpy, signal, sys
target, when = sys.argv[1], sys.argv[2]
real = os.replace
def replace(src, dst, **kw):
    hit = target in str(dst)
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, **kw)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.argv = ["stages", *sys.argv[3:]]
runpy.run_module("stages", run_name="__main__", alter_sys=True)
"""


def project(tmp_path_factory, name: str) -> Path:
    dst = copy_project(tmp_path_factory.mktemp(name))
    (dst / "params.yaml").write_text(yaml.safe_dump(PROFILE, sort_keys=False))
    return commit_project(dst)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The profile run once without interruption."""
    root = project(tmp_path_factory, "reference")
    run([DVC, "repro"], root)
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    return project(tmp_path_factory, "killed")


def start(root: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`dvc repro *args` in its own process group (so a kill reaches the stage it runs), output to a file."""
    log = root / f"repro-{time.monotonic_ns()}.log"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env["PYTHONUNBUFFERED"] = "1"  # the kill points read this log while it is written
    with open(log, "w") as out:
        cmd = [DVC, "repro", *args]
        group = {"start_new_session": True}
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, **group)
    return proc, log


def kill_when(proc: subprocess.Popen, log: Path, ready: Callable[[], bool], timeout: float = 600) -> None:
    """SIGKILL the whole process group as soon as `ready()` holds; fail if the run ends first."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def has_file(folder: Path) -> Callable[[], bool]:
    return lambda: folder.is_dir() and any(not f.name.startswith(".") for f in folder.iterdir())


def assert_same_models(a: Path, b: Path) -> None:
    for m in MODELS:
        pa, pb = a / "models" / f"{m}.pt", b / "models" / f"{m}.pt"
        sa = torch.load(pa, weights_only=True)["state_dict"]
        sb = torch.load(pb, weights_only=True)["state_dict"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), m
        assert checkpoint.sha256(pa) == checkpoint.sha256(pb), f"{m}: same tensors, different bytes"


def assert_up_to_date(root: Path) -> None:
    out = run([DVC, "status"], root).stdout
    assert "up to date" in out, out


@pytest.mark.e2e
def test_kill_9_at_two_points_of_dvc_repro_resumes_to_identical_tensors(reference, killed):
    proc, log = start(killed)  # 1: mid-training of the teacher, after its first epoch's state is written
    kill_when(proc, log, has_file(killed / "state" / "teachers" / "t1"))
    assert not (killed / "models" / "teachers" / "t1.pt").exists()
    proc, log = start(killed)  # 2: mid-training of the student that learns from it
    kill_when(proc, log, has_file(killed / "state" / "students" / "kd"))
    assert not (killed / "models" / "students" / "kd.pt").exists()
    run([DVC, "repro"], killed)
    assert_same_models(reference, killed)
    assert_up_to_date(killed)


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["state/teachers/t1", "models/teachers/t1.pt"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_at_the_atomic_rename_resumes_to_the_same_bytes(reference, killed, target, when):
    run([DVC, "repro"], killed)  # the completed pipeline (a no-op after the test above)
    shutil.rmtree(killed / "state" / "teachers" / "t1")  # train the teacher again from its first epoch
    (killed / "models" / "teachers" / "t1.pt").unlink()
    stage = ["train-teacher", "t1"]
    res = run([sys.executable, "-c", KILL_AT_RENAME, target, when, *stage], killed, check=False)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    out = run([DVC, "repro"], killed).stdout
    # the teacher resumes (or restarts) to the same bytes, so no student, evaluation or export re-runs (the
    # report does: it draws the teacher's training curves, whose timings differ)
    assert ran_stages(out) - {"report"} == {"train-teacher-t1"}, out
    assert_same_models(reference, killed)
    for folder in ("models/teachers", "state/teachers/t1"):
        assert not list((killed / folder).glob(".*.tmp")), f"{folder}: a temporary file was left"
    assert_up_to_date(killed)


@pytest.mark.e2e
def test_a_kill_during_export_and_report_leaves_a_pipeline_that_completes(reference, killed):
    onnx = ("models/export/kd.onnx", "models/export/kd.int8.onnx")
    run([DVC, "repro"], killed)
    proc, log = start(killed, "--force", "--single-item", "export-kd")  # killed once fp32 is out: INT8 next
    kill_when(proc, log, lambda: (killed / onnx[0]).is_file())
    run([DVC, "repro"], killed)  # export again, and the report of its new latency figures
    for f in onnx:
        assert checkpoint.sha256(killed / f) == checkpoint.sha256(reference / f), f
    report = (killed / "results" / "report.md").read_text()
    proc, log = start(killed, "--force", "--single-item", "report")
    kill_when(proc, log, lambda: "Running stage 'report'" in log.read_text())
    run([DVC, "repro"], killed)
    assert (killed / "results" / "report.md").read_text() == report
    assert_up_to_date(killed)


@pytest.mark.e2e
def test_a_second_dvc_repro_beside_a_first_is_refused_and_nothing_breaks(reference, killed):
    run([DVC, "repro"], killed)
    proc, log = start(killed, "--force", "--single-item", "distill-scratch")
    t0 = time.monotonic()
    while "Running stage" not in log.read_text():
        assert proc.poll() is None and time.monotonic() - t0 < 300, log.read_text()[-2000:]
        time.sleep(0.05)
    second = run([DVC, "repro"], killed, check=False)
    assert second.returncode != 0 and "lock" in (second.stdout + second.stderr).lower(), second.stderr
    assert proc.wait(timeout=600) == 0, log.read_text()[-2000:]
    assert_same_models(reference, killed)
    # the same bytes again: only the report (the student's training curves have new timings) is left to do
    assert ran_stages(run([DVC, "repro"], killed).stdout) <= {"report"}
    assert_up_to_date(killed)
