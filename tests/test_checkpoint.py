"""Artifacts round-trip with weights_only=True; writes are atomic; bad files are one-line errors."""
from __future__ import annotations

import pytest
import torch

from pipeline import checkpoint
from pipeline.errors import KdpipeError


def test_round_trip_with_weights_only(make_artifact, tiny_data):
    path = make_artifact("t1")
    raw = torch.load(path, weights_only=True)  # plain torch, the contract users rely on
    assert raw["format"] == checkpoint.ARTIFACT_FORMAT and raw["arch"] == "resnet8"
    model, meta = checkpoint.load_model(path)
    assert "state_dict" not in meta and meta["class_names"] == tiny_data["class_names"]
    x = torch.randn(3, 1, 16, 16)
    torch.manual_seed(0)
    ref = checkpoint.model_from_artifact(raw)
    torch.testing.assert_close(model(x), ref(x))


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
