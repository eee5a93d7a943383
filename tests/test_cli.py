"""The CLI as a user meets it: one clear line and exit code 2 on a user error, no partial output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stages import app, load_all

load_all()
runner = CliRunner()

TINY = """
base: {seed: 0}
data: {source: synthetic, val_size: 32, synthetic: {train: 160, test: 64}, augment: {pad: 0}}
teachers:
  t1: {arch: resnet8, optim: {epochs: 1, batch_size: 64}}
patriarchs: {}
students:
  s1: {arch: resnet8, method: kd, teachers: [t1], optim: {epochs: 1, batch_size: 64}}
generations: {}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(TINY)
    return tmp_path


def one_error_line(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert pattern in lines[0], lines[0]


def test_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("prepare-data", "train-teacher", "distill", "evaluate", "report"):
        assert cmd in result.output


def test_unknown_params_key(project):
    (project / "params.yaml").write_text(TINY.replace("seed: 0", "sed: 0"))
    one_error_line(runner.invoke(app, ["prepare-data"]), "base.sed: unknown key")


def test_missing_prepared_data(project):
    one_error_line(runner.invoke(app, ["train-teacher", "t1"]), "prepared data set not found")


def test_unknown_teacher_and_missing_teacher_artifact(project):
    assert runner.invoke(app, ["prepare-data"]).exit_code == 0
    one_error_line(runner.invoke(app, ["train-teacher", "nobody"]), "no teachers entry 'nobody'")
    one_error_line(runner.invoke(app, ["distill", "s1"]), "models/teachers/t1.pt")
    assert not (project / "models" / "students" / "s1.pt").exists()


def test_teacher_with_other_class_count(project):
    assert runner.invoke(app, ["prepare-data"]).exit_code == 0
    assert runner.invoke(app, ["train-teacher", "t1"]).exit_code == 0
    (project / "params.yaml").write_text(TINY.replace("test: 64}", "test: 64, classes: 3}"))
    assert runner.invoke(app, ["prepare-data"]).exit_code == 0
    one_error_line(
        runner.invoke(app, ["distill", "s1"]),
        "teacher 't1' (models/teachers/t1.pt): has num_classes=4 but the data has 3",
    )
    assert not (project / "models" / "students" / "s1.pt").exists()


def test_unknown_arch(project):
    (project / "params.yaml").write_text(TINY.replace("t1: {arch: resnet8", "t1: {arch: resnet9"))
    # checked when params load: the first stage already refuses it, before anything is written
    one_error_line(runner.invoke(app, ["prepare-data"]), "teachers.t1.arch: unknown arch 'resnet9'")
    assert not (project / "data").exists()


def test_missing_data_set(project):
    (project / "params.yaml").write_text(
        TINY.replace("source: synthetic", "source: cifar10, cifar10: {root: nowhere}")
    )
    one_error_line(runner.invoke(app, ["prepare-data"]), "data set 'cifar10' not found under 'nowhere'")
    assert not (project / "data").exists()


def test_train_writes_artifact_and_metrics(project):
    assert runner.invoke(app, ["prepare-data"]).exit_code == 0
    result = runner.invoke(app, ["train-teacher", "t1"])
    assert result.exit_code == 0, result.output
    assert (project / "models" / "teachers" / "t1.pt").is_file()
    metrics = json.loads((project / "results" / "train-teacher" / "t1" / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["acc"] <= 1.0
    result = runner.invoke(app, ["train-teacher", "t1"])  # state matches: resumes at the end, says so
    assert "resumed at epoch 1" in result.output


def test_predict_table_keeps_the_file_name_of_a_long_path(tmp_path, monkeypatch):
    """The table's image column is cut at its start, so a deep path still shows its file name."""
    from stages.predict import IMAGE_CHARS, _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(str(tmp_path / "imgs" / "a.png")) == "imgs/a.png"  # inside the working directory: relative
    deep = "/elsewhere/" + "d" * 100 + "/cat_0001.png"
    shown = _shown(deep)
    assert len(shown) == IMAGE_CHARS and shown.startswith("…") and shown.endswith("d/cat_0001.png")
    assert _shown("/x/short.png") == "/x/short.png"
