"""select-student: budget choice (stubbed timer), impossible budget, cache, one real timing, resolve_selected.

The candidates are tiny CIFAR ResNets at 16 px (4 classes, 1 channel), exported for real (TorchScript
exporter: fast) and quantized; only the timer is stubbed, with latencies set per candidate label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.nn as nn

from pipeline.config import from_dict
from pipeline.errors import KdpipeError
from pipeline.select import measure, run_selection
from pipeline.select_cache import cache_key, environment
from pipeline.select_space import (
    Candidate,
    SelectParams,
    count_macs,
    default_space,
    expand,
    model_info,
    resolve_selected,
)

FACTS = {"num_classes": 4, "in_channels": 1, "input_size": 16}
RECIPE = {"method": "minmax", "activation": "u8", "weight": "s8", "per_channel": True, "fp32_stem": True}
SPACE = [{"arch": "resnet8"}, {"arch": "resnet14"}, {"arch": "resnet20"}]  # input_sizes [] = the data's 16 px
LATENCY = {"resnet8 @16": 0.10, "resnet14 @16": 0.20, "resnet20 @16": 0.40}  # stub p50 in ms; p90 = 1.5 x p50


class StubTimer:
    """Stands in for bench.time_runs: fixed latencies, counts its calls and never runs the models."""

    def __init__(self) -> None:
        self.calls, self.timed = 0, []

    def __call__(self, fns: dict, warmup: int, runs: int, **_) -> dict:
        self.calls += 1
        self.timed += list(fns)
        return {k: {"p50_ms": LATENCY[k], "p90_ms": 1.5 * LATENCY[k]} for k in fns}


def params(**kw) -> SelectParams:
    base = {
        "candidates": SPACE,
        "exporter": "legacy",
        "runs": 3,
        "warmup": 1,
        "calib_images": 4,
        "threads": 1,
    }
    return from_dict(SelectParams, base | kw, "select")


def select(tmp: Path, name: str, timer: StubTimer, **kw) -> dict:
    """run_selection into tmp/<name>/ with the shared cache tmp/cache.json."""
    out = tmp / name
    return run_selection(FACTS, params(**kw), RECIPE, out, out / "selected.json", tmp / "cache.json", timer)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> dict:
    """One measured run with a 0.15 ms budget: only resnet8 (0.10 ms) fits; the cache is then full."""
    tmp = tmp_path_factory.mktemp("select")
    timer = StubTimer()
    sel = select(tmp, "out", timer, latency_ms=0.15)
    return {"tmp": tmp, "timer": timer, "selected": sel}


def test_budget_admits_exactly_one(first_run):
    tmp, sel = first_run["tmp"], first_run["selected"]
    timer = first_run["timer"]
    assert timer.calls == 1 and sorted(timer.timed) == sorted(LATENCY)  # one group of 3 candidates
    assert (sel["arch"], sel["input_size"], sel["arch_kwargs"]) == ("resnet8", 16, {})
    assert sel["predicted_latency_ms"] == {"p50": 0.10, "p90": pytest.approx(0.15)}  # 1.5 x 0.10
    assert {k: sel["timed"][k] for k in ("batch_size", "threads", "runs", "warmup")} == {
        "batch_size": 1,
        "threads": 1,
        "runs": 3,
        "warmup": 1,
    }  # the setting the export stage times the trained student at
    assert resolve_selected(tmp / "out" / "selected.json") == ("resnet8", {}, 16)
    table = json.loads((tmp / "out" / "table.json").read_text())
    assert [r["label"] for r in table["rows"] if r["fits"]] == ["resnet8 @16"]
    assert table["chosen"] == "resnet8 @16" and (tmp / "out" / "pareto.png").stat().st_size > 1000
    rows = {r["label"]: r for r in table["rows"]}
    # deeper nets at the same width: more MACs and params (resnet14 = resnet8 + one block per stage)
    assert rows["resnet8 @16"]["macs"] < rows["resnet14 @16"]["macs"] < rows["resnet20 @16"]["macs"]
    assert all(r["size_mb"] > 0 and r["exporter"] == "legacy" for r in rows.values())
    assert "**resnet8 @16**" in (tmp / "out" / "candidates.md").read_text()


def test_new_budget_reuses_the_cache(first_run):
    """A second run with a 0.3 ms budget times nothing and picks resnet14 (more MACs, 0.20 ms)."""
    tmp, timer = first_run["tmp"], StubTimer()
    sel = select(tmp, "out2", timer, latency_ms=0.3)
    assert timer.calls == 0
    assert sel["arch"] == "resnet14"
    rows = json.loads((tmp / "out2" / "table.json").read_text())["rows"]
    assert all(r["cached"] for r in rows)


def test_other_limits_and_proxy(first_run):
    """No latency limit, max_params just below resnet20's: resnet14 wins on MACs; a params proxy agrees."""
    tmp = first_run["tmp"]
    rows = {r["label"]: r for r in json.loads((tmp / "out" / "table.json").read_text())["rows"]}
    cap = rows["resnet20 @16"]["params"] - 1
    for proxy in ("macs", "params"):
        timer = StubTimer()
        sel = select(tmp, f"out3_{proxy}", timer, max_params=cap, proxy=proxy)
        assert (sel["arch"], timer.calls) == ("resnet14", 0)


def test_a_candidate_that_does_not_build_is_left_out(first_run):
    """resnet8 takes no `bogus` kwarg: its row says why; the cached three are compared, nothing is timed."""
    tmp, timer = first_run["tmp"], StubTimer()
    space = SPACE + [{"arch": "resnet8", "input_sizes": [12], "arch_kwargs": {"bogus": 1}}]
    sel = select(tmp, "out5", timer, latency_ms=0.3, candidates=space)
    rows = {r["label"]: r for r in json.loads((tmp / "out5" / "table.json").read_text())["rows"]}
    bad = rows["resnet8 [bogus=1] @12"]
    assert "bad arch_kwargs" in bad["error"] and not bad["fits"]
    assert (sel["arch"], timer.calls) == ("resnet14", 0)
    assert "left out" in (tmp / "out5" / "candidates.md").read_text()


def test_impossible_budget_names_the_fastest(first_run):
    tmp = first_run["tmp"]
    with pytest.raises(KdpipeError) as e:
        select(tmp, "out4", StubTimer(), latency_ms=0.05)
    msg = str(e.value)
    assert "\n" not in msg and "resnet8 @16" in msg and "0.100 ms" in msg and "0.05 ms" in msg
    assert not (tmp / "out4" / "selected.json").exists() and (tmp / "out4" / "table.json").is_file()


def test_export_recipe_choice_reaches_the_quantizer(monkeypatch):
    """`export.recipe: auto` times the arch family's INT8 recipe, as the export stage ships it; manual the
    stage's own per_channel/fp32_stem settings (recipe None)."""
    from pipeline import select_export

    real, seen = select_export.quantize_int8, []
    monkeypatch.setattr(
        select_export, "quantize_int8", lambda *a, **kw: seen.append(kw["recipe"]) or real(*a, **kw)
    )
    sp = params(candidates=[{"arch": "resnet8"}])
    for choice in ("auto", "manual"):
        rows = measure(expand(sp.candidates, 16), FACTS, sp, RECIPE | {"recipe": choice}, None, StubTimer())
        assert rows[0]["p50_ms"] == LATENCY["resnet8 @16"]
    assert seen[0].name == "resnet_cifar" and "global_pool" in seen[0].fusions and seen[1] is None


def test_cache_key_depends_on_the_environment():
    c = Candidate("resnet8", 16)
    base = environment(params(), RECIPE, FACTS)
    keys = {
        cache_key(c, base),
        cache_key(c, base | {"threads": 2}),
        cache_key(c, base | {"cpu": "other"}),
        cache_key(Candidate("resnet8", 16, {"width_mult": 0.5}), base),
    }
    assert len(keys) == 4 and cache_key(c, dict(base)) in keys


def test_real_timing_of_a_tiny_model():
    """The shipped path: dynamo export_onnx, INT8, ORT session, bench.time_runs; no cache file."""
    real = {"runs": 5, "warmup": 1, "calib_images": 4, "threads": 1, "exporter": "dynamo"}
    sp = from_dict(SelectParams, real, "select")
    (row,) = measure([Candidate("resnet8", 16)], FACTS, sp, RECIPE, None)
    assert row["p50_ms"] > 0 and row["p90_ms"] >= row["p50_ms"]
    assert row["exporter"] == "dynamo" and not row["cached"]


def test_count_macs_by_hand():
    # conv 1->2, 3x3, padding 1 on 4x4: 2 out channels * 16 positions * 9 taps = 288 MACs;
    # linear 32 -> 3: 96 MACs; total 384
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(32, 3))
    assert count_macs(net, 1, 4) == 384


def test_space_expansion_and_params_errors():
    space = from_dict(SelectParams, {"candidates": [{"arch": "resnet8", "input_sizes": [0, 12, 16]}]}, "s")
    cands = expand(space.candidates, 16)
    assert [c.label for c in cands] == ["resnet8 @16", "resnet8 @12"]  # 0 = the data's 16 px, listed once
    with pytest.raises(KdpipeError, match="select.latency_ms"):
        from_dict(SelectParams, {"latency_ms": -1}, "select")
    with pytest.raises(KdpipeError, match="unknown arch"):
        expand(from_dict(SelectParams, {"candidates": [{"arch": "nope"}]}, "s").candidates, 16)
    with pytest.raises(KdpipeError, match="width_mult"):
        both = {"arch": "resnet8", "width_mults": [0.5], "arch_kwargs": {"width_mult": 1.0}}
        expand(from_dict(SelectParams, {"candidates": [both]}, "s").candidates, 16)


def test_default_space_sizes():
    space = default_space(28)  # every model of a profile trains at the data's size: 28 px only
    assert space and all(s.input_sizes == [28] and model_info(s.arch)["deployable"] for s in space)


def test_resolve_selected_errors(tmp_path: Path):
    with pytest.raises(KdpipeError, match=r"run select-student \(dvc repro\)"):
        resolve_selected(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    zero = {"arch": "resnet8", "arch_kwargs": {}, "input_size": 0}
    for text in ("{not json", json.dumps({"arch": "resnet8"}), json.dumps(zero)):
        bad.write_text(text)
        with pytest.raises(KdpipeError, match="select-student") as e:
            resolve_selected(bad)
        assert "\n" not in str(e.value)


def test_stage_without_prepared_data_is_one_line(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from stages import app, load_all

    load_all()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data: {source: synthetic}\n")
    result = CliRunner().invoke(app, ["select-student"])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "prepared data set not found" in lines[0] and "select-student" in lines[0]
