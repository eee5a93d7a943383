"""The evaluate stage's library half: one job per model params lists, then per ensemble, in that order."""

from __future__ import annotations

import pytest
import torch

from pipeline.ensemble import ensemble_jobs
from pipeline.errors import KdpipeError
from pipeline.evaluate import Entry, evaluate_models, model_jobs, require_artifacts


def test_evaluate_models_scores_every_model_then_every_ensemble(make_artifact, tiny_data):
    paths = {"a": make_artifact("a", seed=0), "b": make_artifact("b", seed=1)}
    entries = [Entry("teachers", "a", "a"), Entry("students", "b_s1", "b")]
    jobs = model_jobs(entries, [paths["a"], paths["b"]]) + ensemble_jobs(
        {"ab": ["a", "b"]}, paths.__getitem__
    )
    out = list(evaluate_models(jobs, tiny_data, 64, 15, "cpu"))
    assert [name for name, _, _ in out] == ["a", "b_s1", "ab"]
    (_, ma, za), (_, mb, zb), (_, me, ze) = out
    assert (ma["section"], ma["group"], mb["section"], mb["group"]) == ("teachers", "a", "students", "b")
    assert (me["kind"], me["sources"]) == ("ensemble", "a, b") and "section" not in me
    assert za.shape == (len(tiny_data["test_y"]), 4) and not torch.equal(za, zb)  # two different nets
    # the ensemble's logits: log of the mean of its members' softmaxes, on the same test images
    torch.testing.assert_close(ze, ((za.softmax(1) + zb.softmax(1)) / 2).log(), atol=1e-5, rtol=0)
    top1 = (za.argmax(1) == torch.as_tensor(tiny_data["test_y"])).float().mean().item()
    assert ma["top1"] == pytest.approx(top1)


def test_require_artifacts_names_the_first_missing_and_the_count(tmp_path):
    there = tmp_path / "a.pt"
    there.write_bytes(b"x")
    require_artifacts([there])  # nothing missing: no error
    with pytest.raises(KdpipeError, match=r"b\.pt: model artifact not found \(2 of the 3 models params"):
        require_artifacts([there, tmp_path / "b.pt", tmp_path / "c.pt"])
