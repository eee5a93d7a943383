"""The trained `arch: selected` student against its budget: comparison and report section (hand-made
dicts), and the export stage's timing at the selection's setting (a tiny untrained resnet8, fp32 ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import checkpoint
from pipeline.config import from_dict
from pipeline.errors import KdpipeError
from pipeline.models import create_model, num_parameters
from pipeline.onnx_write import export_onnx
from pipeline.select_budget import budget_metrics, budget_section, compare, measure_as_selected
from pipeline.select_space import SelectParams, count_macs

SELECTED = {
    "arch": "resnet8",
    "arch_kwargs": {},
    "input_size": 28,
    "label": "resnet8 @28",
    "params": 77754,
    "macs": 9345920,
    "size_mb": 0.101,
    "predicted_latency_ms": {"p50": 0.30, "p90": 0.36},
    "budget": {"latency_ms": 0.5, "max_mb": 0.2, "latency_stat": "p50", "batch_size": 1, "threads": 1},
    "precision": "int8",
    "cpu": "AMD EPYC",
    "timed": {"batch_size": 1, "threads": 1, "runs": 30, "warmup": 5, "onnxruntime": "1.22.0"},
}


def measured(**kw) -> dict:
    """Export metrics holding the trained student's timing at the selection's setting."""
    timing = {
        "label": "resnet8 @28",
        "params": 77754,
        "macs": 9345920,
        "precision": "int8",
        "batch_size": 1,
        "threads": 1,
        "p50_ms": 0.33,
        "p90_ms": 0.40,
        "runs": 30,
        "warmup": 5,
        "source": "timed for the budget",
        "size_mb": 0.104,
        "cpu": "AMD EPYC",
    }
    return {"budget_timing": timing | kw}


def rows(c: dict) -> dict:
    return {r["key"]: r for r in c["rows"]}


def test_a_student_within_the_budget_meets_it():
    c = compare(SELECTED, measured(), "auto")
    assert c["verdict"] == "meets budget" and c["notes"] == []
    lat = rows(c)["latency_ms"]
    assert (lat["limit"], lat["predicted"], lat["measured"], lat["fits"]) == (0.5, 0.30, 0.33, True)
    assert rows(c)["size_mb"]["fits"] is True and rows(c)["params"]["fits"] is None  # no params limit
    md = "\n".join(budget_section({"auto": c}))
    assert "**auto** (`arch: selected`): chosen resnet8 @28, trained resnet8 @28: **meets budget**" in md
    assert (
        "| p50 latency, ms (INT8, batch 1, 1 thread(s)) | ≤ 0.5 | 0.300 | 0.330 | 1.10 | meets budget |" in md
    )
    assert "| INT8 file, MB | ≤ 0.2 | 0.101 | 0.104 | 1.03 | meets budget |" in md
    assert "| params | no limit | 77,754 | 77,754 | 1.00 | no limit |" in md
    assert budget_metrics(c) == {
        "predicted_ms": 0.3,
        "measured_ms": 0.33,
        "budget_ms": 0.5,
        "meets_budget": True,
    }


def test_a_student_slower_than_predicted_is_over_budget():
    """Predicted 0.30 ms fits 0.5 ms; the trained export (e.g. INT8 fallback nodes kept fp32) takes 0.62."""
    c = compare(SELECTED, measured(p50_ms=0.62), "auto")
    assert c["verdict"] == "over budget" and rows(c)["latency_ms"]["fits"] is False
    md = "\n".join(budget_section({"auto": c}))
    assert "**over budget**" in md and "| 0.620 | 2.07 | over budget |" in md
    assert budget_metrics(c)["meets_budget"] is False
    big = compare(SELECTED, measured(size_mb=0.25), "auto")  # a size limit alone can break it too
    assert big["verdict"] == "over budget" and rows(big)["latency_ms"]["fits"] is True


def test_p90_budget_compares_p90():
    sel = SELECTED | {"budget": SELECTED["budget"] | {"latency_stat": "p90", "latency_ms": 0.38}}
    c = compare(sel, measured(), "auto")  # p90 0.40 > 0.38, although p50 0.33 would fit
    assert rows(c)["latency_ms"]["predicted"] == 0.36 and c["verdict"] == "over budget"


def test_mismatched_setting_or_arch_is_not_comparable():
    c = compare(SELECTED, measured(threads=2), "auto")
    assert c["verdict"] == "not comparable" and "2 thread(s)" in c["notes"][0]
    c = compare(SELECTED, measured(label="resnet14 @28"), "auto")
    assert c["verdict"] == "not comparable" and "resnet14 @28" in c["notes"][0]
    c = compare(SELECTED, measured(cpu="Intel Xeon"), "auto")  # another CPU: said, still judged
    assert c["verdict"] == "meets budget" and "Intel Xeon" in c["notes"][0]


def test_missing_inputs_are_one_line_errors():
    with pytest.raises(KdpipeError, match="run select-student"):
        compare({}, measured(), "auto")
    with pytest.raises(KdpipeError, match="run kdpipe export auto"):
        compare(SELECTED, {"top1": {}}, "auto")
    assert budget_section({}) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """An untrained resnet8 artifact (4 classes, 1 channel, 16 px) and its fp32 ONNX file."""
    tmp = tmp_path_factory.mktemp("budget")
    model = create_model("resnet8", 4, 1).eval()
    art = checkpoint.make_artifact(
        model,
        arch="resnet8",
        arch_kwargs={},
        num_classes=4,
        in_channels=1,
        input_size=16,
        mean=[0.5],
        std=[0.25],
        class_names=["a", "b", "c", "d"],
        params={},
        metrics={},
        kind="student",
        name="tiny",
    )
    checkpoint.save(art, tmp / "tiny.pt")
    export_onnx(model, art, "untrained", tmp / "tiny.onnx", exporter="legacy")
    return {"art": tmp / "tiny.pt", "files": {"fp32": tmp / "tiny.onnx"}, "model": model}


def export_metrics(threads: int) -> dict:
    env = {"threads": threads, "providers": {"ort_fp32": "CPUExecutionProvider"}, "runs": 3, "warmup": 1}
    env |= {"cpu": "test CPU", "versions": {"onnxruntime": "1.0"}}
    return {"latency": {"ort_fp32": {"b1": {"p50_ms": 123.0, "p90_ms": 124.0}}}, "env": env}


def test_export_timing_reuses_or_measures_at_the_selection_setting(tiny):
    sp = from_dict(SelectParams, {"precision": "fp32", "threads": 1, "runs": 4, "warmup": 1}, "select")
    images = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32)
    same = measure_as_selected(tiny["art"], tiny["files"], images, sp, export_metrics(threads=1))
    assert (same["source"], same["p50_ms"], same["runs"]) == ("export latency", 123.0, 3)  # export's own
    other = measure_as_selected(tiny["art"], tiny["files"], images, sp, export_metrics(threads=2))
    assert other["source"] == "timed for the budget" and other["runs"] == 4 and other["threads"] == 1
    assert 0 < other["p50_ms"] <= other["p90_ms"] < 123.0  # measured here, not copied
    assert other["label"] == "resnet8 @16" and other["params"] == num_parameters(tiny["model"])
    assert other["macs"] == count_macs(tiny["model"], 1, 16)
    assert other["size_bytes"] == Path(tiny["files"]["fp32"]).stat().st_size


def test_stage_file_of_the_budget_profile():
    """export-auto re-runs when the timing setting changes, not the budget (which reaches it through the
    trained model); the report reads the selection's budget and prediction."""
    import yaml

    from stages.dvc_yaml import expected

    stages = yaml.safe_load(expected(Path(__file__).parents[1] / "profiles" / "budget.yaml"))["stages"]
    keys = [k for k in stages["export-auto"]["params"] if k.startswith("select.")]
    assert keys == ["select.precision", "select.batch_size", "select.threads", "select.runs", "select.warmup"]
    assert (
        "models/selected.json" in stages["report"]["deps"]
        and "models/selected.json" in stages["distill-auto"]["deps"]
    )
    assert "pipeline/select_budget.py" in stages["export-auto"]["deps"]
