"""Artifacts round-trip with weights_only=True; writes are atomic; bad files and full disks are one-line
errors."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from pipeline import checkpoint
from pipeline.errors import KdpipeError, os_error_line
from pipeline.models import create_model


def test_round_trip_with_weights_only(make_artifact, tiny_data):
    path = make_artifact("t1")
    raw = torch.load(path, weights_only=True)  # plain torch, the contract users rely on
    assert (
        raw["format"] == checkpoint.ARTIFACT_FORMAT and raw["arch"] == "resnet8" and raw["kind"] == "teacher"
    )
    model, meta = checkpoint.load_model(path)
    assert "state_dict" not in meta and meta["class_names"] == tiny_data["class_names"]
    x = torch.randn(3, 1, 16, 16)
    torch.manual_seed(0)
    ref = checkpoint.model_from_artifact(raw)
    torch.testing.assert_close(model(x), ref(x))


def test_knowledge_kinds_are_not_models_and_kinds_are_checked(tmp_path):
    art = checkpoint.make_artifact(
        kind="probes",
        name="probes",
        params={},
        metrics={"val/acc": 0.5, "time/epoch_s": 3.0},
        teachers=["a"],
        layers=(-1,),
    )
    assert art["metrics"] == {"val/acc": 0.5} and art["layers"] == [-1]  # no timings; tuples stored as lists
    checkpoint.save(art, tmp_path / "p.pt")
    assert checkpoint.load_artifact(tmp_path / "p.pt", ("probes",))["teachers"] == ["a"]
    with pytest.raises(KdpipeError, match="is a 'probes' artifact, expected teacher or student"):
        checkpoint.load_model(tmp_path / "p.pt")
    with pytest.raises(ValueError, match="needs arch"):
        checkpoint.make_artifact(
            create_model("resnet8", 4, 1), kind="teacher", name="t", params={}, metrics={}
        )


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pt"
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(KdpipeError, match="not found"):
        checkpoint.load_model(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(KdpipeError, match="not a readable"):
        checkpoint.load_model(tmp_path / "bad.pt")
    checkpoint.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(KdpipeError, match="not a kdpipe model artifact"):
        checkpoint.load_model(tmp_path / "other.pt")


def test_unwritable_output_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KdpipeError, match="cannot write"):
        checkpoint.save({"a": 1}, blocker / "sub" / "out.pt")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_disk_full_or_denied_keeps_the_previous_file_and_names_free_space(tmp_path, monkeypatch, code):
    target = tmp_path / "model.pt"
    checkpoint.save({"good": 1}, target)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)  # the data write fails: disk full at flush time, or denied
    with pytest.raises(KdpipeError) as e:
        checkpoint.save({"new": 2}, target)
    msg = str(e.value)
    assert "\n" not in msg and str(target) in msg and os.strerror(code) in msg and "MiB free" in msg
    assert torch.load(target, weights_only=True) == {"good": 1}  # the previous good output survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


def test_weights_of_another_arch_are_one_line(tmp_path, tiny_data):
    art = checkpoint.make_artifact(
        create_model("resnet20", 4, 1),
        kind="teacher",
        name="t",
        arch="resnet20",
        arch_kwargs={},
        num_classes=4,
        in_channels=1,
        input_size=16,
        mean=tiny_data["mean"],
        std=tiny_data["std"],
        class_names=tiny_data["class_names"],
        params={},
        metrics={},
    )
    checkpoint.save(art, tmp_path / "t.pt")
    with pytest.raises(KdpipeError, match="has arch='resnet20' but params say 'resnet8'"):
        checkpoint.load_model(tmp_path / "t.pt", expect={"arch": "resnet8"})
    checkpoint.save(art | {"arch": "resnet8"}, tmp_path / "lying.pt")  # declared arch, other weights
    with pytest.raises(KdpipeError) as e:
        checkpoint.load_model(tmp_path / "lying.pt")
    assert "do not fit arch 'resnet8'" in str(e.value) and "\n" not in str(e.value)
    assert "Error(s) in loading" not in str(e.value)


def test_a_temp_file_left_by_a_killed_write_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.pt"
    (tmp_path / ".out.pt.abc123.tmp").write_bytes(b"half")  # what kill -9 before the rename leaves
    (tmp_path / ".other.pt.abc123.tmp").write_bytes(b"half")  # another file's: not ours to remove
    checkpoint.atomic_write_bytes(target, b"whole")
    assert sorted(f.name for f in tmp_path.iterdir()) == [".other.pt.abc123.tmp", "out.pt"]
    assert target.read_bytes() == b"whole"


def test_os_error_line_names_the_file_and_the_fix():
    line = os_error_line(OSError(28, "No space left on device", "models/x.onnx"))
    assert line == (
        "cannot write models/x.onnx: No space left on device; free disk space, fix the path (a file where a "
        "folder belongs?) or its permissions, then re-run"
    )
    assert os_error_line(OSError("boom")).startswith("cannot write a file: boom; free disk space")
