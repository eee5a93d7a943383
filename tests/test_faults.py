"""Fault injection through the real CLI: every bad input ends with one line, exit code 2, no traceback,
and the previous good outputs untouched (same bytes)."""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stages import app, load_all

load_all()
runner = CliRunner()

TINY = """
base: {seed: 0, device: cpu}
data: {source: synthetic, val_size: 32, synthetic: {train: 160, test: 64}}
teachers:
  t1: {arch: resnet8, optim: {epochs: 1, batch_size: 64}}
students:
  s1: {arch: resnet8, method: kd, teachers: [t1], optim: {epochs: 1, batch_size: 64}}
export: {students: [s1], calib_images: 32, latency_runs: 2, latency_warmup: 1}
"""


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under models/, data/ and results/ (the outputs a failure must not touch)."""
    out = {}
    for sub in ("models", "data", "results"):
        for f in sorted((root / sub).rglob("*")) if (root / sub).exists() else []:
            if f.is_file():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A project after prepare-data, train-teacher t1 and distill s1: the previous good outputs."""
    root = tmp_path_factory.mktemp("good")
    (root / "params.yaml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for cmd in (["prepare-data"], ["train-teacher", "t1"], ["distill", "s1"]):
            res = runner.invoke(app, cmd)
            assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def project(good, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "p"
    shutil.copytree(good, root)
    monkeypatch.chdir(root)
    return root


def fails_cleanly(root: Path, cmd: list[str], pattern: str) -> None:
    """`cmd` exits 2 with one stderr line containing `pattern`, no traceback, and changes no output file."""
    before = digest(root)
    res = runner.invoke(app, cmd)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(lines) == 1, res.stderr
    assert pattern in lines[0], lines[0]
    assert digest(root) == before, "a failed command changed or removed earlier outputs"


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (
            ("epochs: 1, batch_size: 64}}\nstudents", "epochs: 0, batch_size: 64}}\nstudents"),
            "optim.epochs: must be >= 1",
        ),
        (
            ("epochs: 1, batch_size: 64}}\nstudents", "epochs: -2, batch_size: 64}}\nstudents"),
            "must be >= 1, got -2",
        ),
        (
            (
                "t1: {arch: resnet8, optim: {epochs: 1, batch_size: 64",
                "t1: {arch: resnet8, optim: {epochs: 1, batch_size: 0",
            ),
            "optim.batch_size: must be >= 1",
        ),
        (
            (
                "optim: {epochs: 1, batch_size: 64}}\nstudents",
                "optim: {epochs: 1, batch_size: 64, lr: -0.1}}\nstudents",
            ),
            "optim.lr: must be > 0",
        ),
        (("teachers: [t1]", "teachers: [students/s1]"), "teach each other in a cycle"),
        (("data:", "studnets: {}\ndata:"), "studnets: unknown section"),
        (("val_size: 32", "val_size: 32, train_subset: 100000"), "train_subset"),
    ],
)
def test_bad_params_fail_before_anything_is_written(project, edit, pattern):
    (project / "params.yaml").write_text(TINY.replace(*edit))
    if pattern == "train_subset":  # a size check needs the data: check-params and prepare-data refuse it
        fails_cleanly(project, ["check-params"], pattern)
        fails_cleanly(project, ["prepare-data"], pattern)
        return
    for cmd in (["check-params"], ["prepare-data"], ["train-teacher", "t1"], ["distill", "s1"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "Traceback" not in res.output, (cmd, res.output)
    fails_cleanly(project, ["train-teacher", "t1"], pattern)


def test_check_params_lists_every_problem(project):
    bad = TINY.replace("epochs: 1, batch_size: 64}}\nstudents", "epochs: 0, batch_size: 64}}\nstudents")
    (project / "params.yaml").write_text(bad.replace("data:", "studnets: {}\ndata:"))
    res = runner.invoke(app, ["check-params"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) >= 2, res.stderr
    assert any("studnets: unknown section" in ln for ln in lines) and any(
        "optim.epochs" in ln for ln in lines
    )


def test_teacher_file_of_another_arch_is_refused(project):
    (project / "params.yaml").write_text(TINY.replace("t1: {arch: resnet8", "t1: {arch: resnet14"))
    fails_cleanly(project, ["distill", "s1"], "t1")


def test_checkpoint_whose_weights_do_not_fit_its_arch(project):
    path = project / "models" / "teachers" / "t1.pt"
    art = torch.load(path, weights_only=True)
    art["state_dict"] = {k: v for k, v in list(art["state_dict"].items())[:-2]}  # drop the head
    torch.save(art, path)
    fails_cleanly(project, ["distill", "s1"], "t1.pt")


def test_corrupt_teacher_file(project):
    (project / "models" / "teachers" / "t1.pt").write_bytes(b"not a checkpoint")
    fails_cleanly(project, ["distill", "s1"], "t1.pt")


def test_nan_loss_keeps_the_previous_model(project):
    (project / "params.yaml").write_text(
        TINY.replace(
            "optim: {epochs: 1, batch_size: 64}}\nexport",
            "optim: {epochs: 1, batch_size: 64, lr: 1.0e+30}}\nexport",
        )
    )
    before = (project / "models" / "students" / "s1.pt").read_bytes()
    res = runner.invoke(app, ["distill", "s1"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "loss became" in res.stderr
    assert (project / "models" / "students" / "s1.pt").read_bytes() == before


def test_full_disk_while_writing_a_model_names_the_path(project, monkeypatch):
    import pipeline.checkpoint as ck

    real = ck.os.replace

    def full(src, dst):  # the temporary file cannot be completed: the disk is full
        if str(dst).endswith("t1.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    (project / "params.yaml").write_text(
        TINY.replace("t1: {arch: resnet8, optim: {epochs: 1", "t1: {arch: resnet8, optim: {epochs: 2")
    )
    monkeypatch.setattr(ck.os, "replace", full)
    res = runner.invoke(app, ["train-teacher", "t1"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "cannot write models/teachers/t1.pt: No space left on device" in res.stderr, res.stderr
    assert not list((project / "models" / "teachers").glob(".*.tmp"))


def test_a_file_where_results_should_be_a_folder(project):
    shutil.rmtree(project / "results" / "train-teacher")
    (project / "results" / "train-teacher").write_text("in the way")
    res = runner.invoke(app, ["train-teacher", "t1"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "results/train-teacher" in res.stderr


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda d: None, "no such file or folder"),
        (lambda d: (d / "x.png").write_text("not an image"), "x.png"),
    ],
)
def test_predict_names_the_path_and_why(project, tmp_path, make, pattern):
    assert runner.invoke(app, ["export", "s1"]).exit_code == 0
    target = tmp_path / "in"
    if make(tmp_path) is None and pattern.startswith("no such"):
        res = runner.invoke(app, ["predict", "models/export/s1.onnx", str(target)])
    else:
        res = runner.invoke(app, ["predict", "models/export/s1.onnx", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert pattern in res.stderr, res.stderr
