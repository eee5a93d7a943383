"""End to end through a real `dvc repro`: a student chosen by a deployment budget (select-student), trained,
exported, timed again and judged against the budget in the report; then a new budget re-runs the choice
from the measurement cache and retrains only what depends on it."""

from __future__ import annotations

import json
import re

import pytest
from test_e2e import BIN, commit_project, copy_project, ran_stages, run

from pipeline import checkpoint

PROFILE = """
base: {seed: 0, device: cpu}
data: {source: synthetic, val_size: 64, synthetic: {train: 320, test: 128}}
teachers:
  t1: {arch: resnet8, seed: 1, optim: {epochs: 1, batch_size: 64, lr: 0.05}}
select:
  latency_ms: 1000       # generous: every candidate fits, the one with the most MACs wins
  batch_size: 1
  threads: 1
  max_macs: 0
  runs: 5
  warmup: 1
  calib_images: 4
  candidates:
    - {arch: resnet8}
    - {arch: mobilenetv2_cifar, width_mults: [0.25]}
students:
  auto: {arch: selected, method: kd, teachers: [t1], optim: {epochs: 1, batch_size: 64, lr: 0.05}}
export: {students: [auto], calib_images: 32, latency_runs: 3, latency_warmup: 1, int8_max_tries: 0}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = copy_project(tmp_path_factory.mktemp("kdpipe-select"))
    (dst / "params.yaml").write_text(PROFILE)
    return commit_project(dst)


def trained_arch(repo) -> tuple[str, dict, int]:
    _, art = checkpoint.load_model(repo / "models" / "students" / "auto.pt")
    return art["arch"], art["arch_kwargs"], art["input_size"]


def check_run(repo) -> dict:
    """The selection was trained, exported, timed at its setting and judged in the report; returns
    selected.json."""
    selected = json.loads((repo / "models" / "selected.json").read_text())
    table = json.loads((repo / "results" / "select-student" / "table.json").read_text())
    fitting = [r for r in table["rows"] if r["fits"]]
    assert selected["label"] == table["chosen"] == max(fitting, key=lambda r: r["macs"])["label"]
    assert trained_arch(repo) == (selected["arch"], selected["arch_kwargs"], selected["input_size"])
    timing = json.loads((repo / "results" / "export" / "auto" / "metrics.json").read_text())["budget_timing"]
    assert (timing["label"], timing["precision"], timing["batch_size"], timing["threads"]) == (
        selected["label"],
        "int8",
        1,
        1,
    )
    assert (repo / "models" / "export" / "auto.int8.onnx").stat().st_size == timing["size_bytes"]
    report = (repo / "results" / "report.md").read_text()
    head = f"**auto** (`arch: selected`): chosen {selected['label']}, trained {selected['label']}: "
    verdict = "meets budget" if timing["p50_ms"] <= 1000 else "over budget"
    assert head + f"**{verdict}**" in report, report
    row = re.search(r"^\| p50 latency, ms \(INT8, batch 1, 1 thread\(s\)\) \| (.*)$", report, re.M)
    assert row, report
    limit, predicted, measured = row.group(1).split(" | ")[:3]
    assert limit == "≤ 1000" and float(predicted) == round(selected["predicted_latency_ms"]["p50"], 3)
    assert float(measured) == round(timing["p50_ms"], 3) > 0
    deploy = json.loads((repo / "results" / "metrics" / "deploy.json").read_text())["auto"]["budget"]
    assert deploy["meets_budget"] is (verdict == "meets budget") and deploy["budget_ms"] == 1000
    return selected


@pytest.mark.e2e
def test_budget_choice_is_trained_exported_and_judged_then_a_new_budget_uses_the_cache(repo):
    first = run([str(BIN / "dvc"), "repro"], repo)
    assert {"select-student", "train-teacher-t1", "distill-auto", "export-auto", "report"} <= ran_stages(
        first.stdout
    )
    before = check_run(repo)
    rows = json.loads((repo / "results" / "select-student" / "table.json").read_text())["rows"]
    assert not any(r["cached"] for r in rows)  # the first run measured every candidate
    # a MACs limit between the two candidates: the smaller one must now be chosen
    macs = sorted(r["macs"] for r in rows)
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("max_macs: 0", f"max_macs: {(macs[0] + macs[1]) // 2}"))
    second = run([str(BIN / "dvc"), "repro"], repo)
    ran = ran_stages(second.stdout)
    assert {"select-student", "distill-auto", "export-auto", "report"} <= ran, second.stdout
    assert not ran & {"prepare-data", "train-teacher-t1"}, ran  # nothing upstream of the choice re-ran
    rows = json.loads((repo / "results" / "select-student" / "table.json").read_text())["rows"]
    assert all(r["cached"] for r in rows)  # a new budget times nothing
    assert "2 cached, 0 to measure" in second.stdout + second.stderr
    after = check_run(repo)
    assert after["label"] != before["label"] and after["macs"] == macs[0]
    again = run([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in again.stdout
