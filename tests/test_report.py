"""The report stage on a fabricated run: curated metrics, params-driven model lists, figures, dvclive."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline import checkpoint
from pipeline.report import accuracy_metrics, deploy_metrics, read_history, seed_rows, seeds_metrics, wide_csv
from stages import app, load_all

load_all()

CLASSES = [
    "T-shirt",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TEACHERS = {"resnet20_a": "teachers", "resnet20_b": "teachers", "tolerant": "patriarchs"}
STUDENTS = {
    "scratch": "students",
    "kd": "students",
    "professor_replace": "students",
    "professor_joint": "students",
    "gpac": "students",
    "ie_kd": "students",
    "dkd": "students",
    "fitnet": "students",
    "tolerant_g1": "generations",
    "tolerant_g2": "generations",
}
PARAMS = """
base: {seed: 0}
data: {source: synthetic}
teachers:
  resnet20_a: {arch: resnet20, seed: 1, optim: {epochs: 6}}
  resnet20_b: {arch: resnet20, seed: 2, optim: {epochs: 6}}
patriarchs:
  tolerant: {arch: resnet8, method: tolerant, optim: {epochs: 4}}
students:
  scratch: {arch: resnet8, optim: {epochs: 4}}
  kd: {arch: resnet8, method: kd, teachers: [resnet20_a, resnet20_b], optim: {epochs: 4}}
  professor_replace: {arch: resnet8, method: kd, teachers: [resnet20_a], optim: {epochs: 4}}
  professor_joint: {arch: resnet8, method: kd, teachers: [resnet20_a], optim: {epochs: 4}}
  gpac: {arch: resnet8, method: kd, teachers: [resnet20_a, resnet20_b], optim: {epochs: 4}}
  ie_kd: {arch: resnet8, method: kd, teachers: [resnet20_a], optim: {epochs: 4}}
  dkd: {arch: resnet8, method: kd, teachers: [resnet20_b], optim: {epochs: 4}}
  fitnet: {arch: resnet8, method: kd, teachers: [resnet20_b], optim: {epochs: 3}}
generations:
  tolerant_g1: {arch: resnet8, method: kd, teachers: [patriarchs/tolerant], optim: {epochs: 4}}
  tolerant_g2: {arch: resnet8, method: kd, teachers: [generations/tolerant_g1], optim: {epochs: 4}}
evaluate: {ensembles: {tolerant_ensemble: [generations/tolerant_g1, generations/tolerant_g2]}}
export: {students: [kd, scratch]}
"""


def write_history(d: Path, epochs: int, final_acc: float, rng: random.Random) -> None:
    """dvclive-style TSVs: val/acc rising towards final_acc, train/loss falling (own scale per model)."""
    floor, rate = rng.uniform(0.15, 0.6), rng.uniform(0.4, 0.65)
    for metric, f in (
        ("val/acc", lambda e: final_acc - 0.25 * rate**e + rng.uniform(-0.005, 0.005)),
        ("train/loss", lambda e: floor + 1.5 * rate**e + rng.uniform(-0.01, 0.01)),
    ):
        path = d / "plots" / "metrics" / f"{metric}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "step\t" + metric.split("/")[1] + "\n" + "".join(f"{e}\t{f(e)}\n" for e in range(1, epochs + 1))
        )


def fake_logits(labels: torch.Tensor, acc: float, gen: torch.Generator) -> torch.Tensor:
    """Logits whose argmax is right on about `acc` of the items (wrong ones go to a neighbouring class)."""
    n, k = labels.shape[0], len(CLASSES)
    pred = torch.where(
        torch.rand(n, generator=gen) < acc,
        labels,
        (labels + 1 + (torch.rand(n, generator=gen) < 0.5).long()) % k,
    )
    return torch.randn(n, k, generator=gen) + 4 * torch.nn.functional.one_hot(pred, k)


def fabricate(
    root: Path, params: str = PARAMS, models: dict[str, str] | None = None, n_test: int = 2000
) -> dict[str, float]:
    """A finished run under `root` without training: params.yaml, evaluate outputs (models.json, logits),
    export metrics for kd and scratch, dvclive histories of `models` ({name: section}, default the 13 of
    PARAMS). Returns each model's test top-1."""
    (root / "params.yaml").write_text(params)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    labels = torch.arange(n_test) % len(CLASSES)
    res = root / "results"
    evaluation = {}
    names = models or {**TEACHERS, **STUDENTS}
    for i, (name, section) in enumerate(names.items()):
        kind = "teacher" if section in ("teachers", "patriarchs") else "student"
        acc = (0.87 if kind == "teacher" and section == "teachers" else 0.80) + 0.004 * (i % 6)
        epochs = 6 if section == "teachers" else (3 if name == "fitnet" else 4)
        write_history(res / ("train-teacher" if kind == "teacher" else "distill") / name, epochs, acc, rng)
        logits = fake_logits(labels, acc, gen)
        checkpoint.save(
            {"logits": logits, "labels": labels, "class_names": CLASSES},
            res / "evaluate" / "logits" / f"{name}.pt",
        )
        top1 = (logits.argmax(1) == labels).float().mean().item()
        evaluation[name] = {
            "top1": top1,
            "top5": 0.99,
            "nll": 0.4,
            "ece": 0.01,
            "params": 77754 if kind == "student" else 272186,
            "size_mb": 0.3 if kind == "student" else 1.04,
            "kind": kind,
            "method": "kd",
            "arch": "resnet8",
            "sources": "—",
            "section": section,
            "group": name,
        }
    ens = fake_logits(labels, 0.83, gen)
    checkpoint.save(
        {"logits": ens, "labels": labels, "class_names": CLASSES},
        res / "evaluate" / "logits" / "tolerant_ensemble.pt",
    )
    evaluation["tolerant_ensemble"] = {
        "top1": (ens.argmax(1) == labels).float().mean().item(),
        "top5": 0.99,
        "nll": 0.5,
        "ece": 0.08,
        "params": 155508,
        "size_mb": 0.59,
        "kind": "ensemble",
    }
    # a model params no longer lists: must not appear
    evaluation["leftover_model"] = dict(evaluation[next(n for n in names if n.startswith("kd"))])
    (res / "evaluate" / "models.json").write_text(json.dumps(evaluation))
    exported = [n for n in names if n.split("_s")[0] in ("kd", "scratch")][:2] + ["leftover_model"]
    for j, name in enumerate(exported):
        lat = {
            "ort_fp32": {"b1": {"p50_ms": 0.074 + 0.01 * j}, "b64": {"p50_ms": 3.2, "images_per_s": 20000}},
            "ort_int8": {"b1": {"p50_ms": 0.055 + 0.008 * j}, "b64": {"p50_ms": 2.1, "images_per_s": 30000}},
        }
        ex = {
            "top1": {"fp32": evaluation[name]["top1"], "int8": evaluation[name]["top1"] - 0.0006},
            "size_bytes": {"fp32": 356205, "int8": 132409},
            "latency": lat,
        }
        (res / "export" / name).mkdir(parents=True, exist_ok=True)
        (res / "export" / name / "metrics.json").write_text(json.dumps(ex))
    (res / "prepare-data").mkdir(parents=True, exist_ok=True)
    (res / "prepare-data" / "metrics.json").write_text(
        json.dumps({"train": 8000, "val": 2000, "test": n_test})
    )
    return {n: m["top1"] for n, m in evaluation.items()}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return fabricate(tmp_path)


def leaves(d: dict) -> int:
    return sum(leaves(v) if isinstance(v, dict) else 1 for v in d.values())


def test_report_stage_on_a_fabricated_run(run, tmp_path):
    res = tmp_path / "results"
    # the best student is picked on validation: give the student worst on test the best validation curve
    val_best = min(STUDENTS, key=lambda n: run[n])
    write_history(res / "distill" / val_best, 4, 0.99, random.Random(1))
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    for png in ("students.png", "teachers.png", "confusion_best.png", "acc_latency.png"):
        assert (res / "plots" / png).stat().st_size > 10_000, png
    deploy = json.loads((res / "metrics" / "deploy.json").read_text())
    assert "leftover_model" not in deploy and set(deploy) == {*TEACHERS, *STUDENTS, "tolerant_ensemble"}
    kd_export = json.loads((res / "export" / "kd" / "metrics.json").read_text())
    assert deploy["kd"]["int8_p50_ms_b1"] == round(kd_export["latency"]["ort_int8"]["b1"]["p50_ms"], 4)
    assert deploy["kd"]["int8_mb"] == round(132409 / 2**20, 3) and "int8_top1" not in deploy["gpac"]
    # one seed each: every student has a baseline (the ce student of its arch) but nothing can be tested
    seeds = json.loads((res / "metrics" / "seeds.json").read_text())
    assert seeds and all(v["verdict"] == "not testable (n=1)" for v in seeds.values() if "verdict" in v), (
        seeds
    )
    text = (res / "report.md").read_text()
    assert "leftover_model" not in text and "| kd | resnet20_b |" in text
    assert f"**{val_best}**" in text and val_best != max(STUDENTS, key=lambda n: run[n])
    header = (res / "plots" / "data" / "students_val_acc.csv").read_text().splitlines()
    assert header[0] == "epoch," + ",".join(STUDENTS)
    # fitnet trained 3 epochs: its epoch-4 cell is empty rather than a made-up value
    assert header[4].split(",")[list(STUDENTS).index("fitnet") + 1] == ""
    rows = json.loads((res / "plots" / "data" / "confusion_best.json").read_text())
    assert len(rows) == 2000 and set(rows[0]) == {"actual", "predicted"}


def test_report_refuses_missing_export_metrics(run, tmp_path):
    (tmp_path / "results" / "export" / "scratch" / "metrics.json").unlink()
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 2 and "results/export/scratch/metrics.json" in result.stderr


def test_metrics_surface_fits_exp_show():
    """10 models, 2 exported, 3 seed groups with baselines: the declared metrics stay within
    5 accuracy keys per model + 2 size keys per model + 4 more per exported model + 7 per seed group."""
    evaluation = {
        n: {"top1": 0.8, "top5": 0.99, "nll": 0.41234567, "ece": 0.0123456, "params": 77754, "size_mb": 0.29}
        for n in list(STUDENTS)[:10]
    }
    for i, m in enumerate(evaluation.values()):
        m["val_top1"] = 0.81234 if i else None  # training's last validation top-1; unknown: left out
    exports = {
        "kd": {
            "top1": {"int8": 0.8},
            "size_bytes": {"int8": 132409},
            "latency": {"ort_fp32": {"b1": {"p50_ms": 0.07}}, "ort_int8": {"b1": {"p50_ms": 0.05}}},
        }
    }
    exports["scratch"] = exports["kd"]
    from pipeline.evaluate import Entry

    entries = [
        Entry("students", f"{g}_s{k}", g, f"scratch_s{k}" if g != "scratch" else "")
        for g in ("scratch", "kd", "gpac")
        for k in range(3)
    ] + [Entry("students", "dkd", "dkd")]
    ev3 = {e.name: {"top1": 0.80 + 0.001 * i} for i, e in enumerate(entries)}
    acc, dep, seeds = (
        accuracy_metrics(evaluation),
        deploy_metrics(evaluation, exports),
        seeds_metrics(seed_rows(entries, ev3)),
    )
    assert leaves(acc) == 5 * 10 - 1 and leaves(dep) == 2 * 10 + 4 * 2
    # scratch: mean, std, n (no baseline); kd and gpac: + delta, ci_low, ci_high, verdict; dkd alone: left out
    assert set(seeds) == {"scratch", "kd", "gpac"} and leaves(seeds) == 3 + 7 + 7
    assert leaves(acc) + leaves(dep) + leaves(seeds) <= 5 * 10 + 2 * 10 + 4 * 2 + 7 * 3
    # values are rounded so a column is at most 6 characters wide (0.4123, not 0.41234567)
    assert acc["kd"]["nll"] == 0.4123 and max(len(str(v)) for m in acc.values() for v in m.values()) <= 6


def test_seed_rows_pair_matching_seeds():
    from pipeline.evaluate import Entry

    entries = [Entry("students", f"scratch_s{k}", "scratch") for k in range(3)]
    entries += [Entry("students", f"kd_s{k}", "kd", f"scratch_s{k}") for k in range(3)]
    # kd − scratch per seed: 0.01, 0.02, 0.03 -> mean 0.02, CI 0.02 ± 4.3027 · 0.01/√3 = [-0.0048, 0.0448]
    top1 = {
        "scratch_s0": 0.82,
        "scratch_s1": 0.83,
        "scratch_s2": 0.84,
        "kd_s0": 0.83,
        "kd_s1": 0.85,
        "kd_s2": 0.87,
    }
    rows = seed_rows(entries, {n: {"top1": v} for n, v in top1.items()})
    kd = seeds_metrics(rows)["kd"]
    assert kd["n"] == 3 and kd["delta"] == 0.02 and kd["ci_low"] == -0.0048 and kd["ci_high"] == 0.0448
    assert kd["verdict"] == "no detectable difference" and kd["mean"] == 0.85 and kd["std"] == 0.02
    assert rows[1].baseline == "scratch"


def test_a_row_compared_with_another_student_is_also_given_against_the_chain_end():
    from pipeline.evaluate import Entry
    from pipeline.report_tables import ReportParts, build_markdown

    entries = [Entry("students", f"scratch_s{k}", "scratch") for k in range(3)]
    entries += [Entry("students", f"kd_s{k}", "kd", f"scratch_s{k}") for k in range(3)]
    entries += [Entry("students", f"prof_s{k}", "prof", f"kd_s{k}") for k in range(3)]
    top1 = [0.80, 0.81, 0.82, 0.83, 0.85, 0.87, 0.84, 0.85, 0.89]  # scratch s0-2, kd s0-2, prof s0-2
    rows = seed_rows(entries, {e.name: {"top1": v} for e, v in zip(entries, top1)})
    seeds = seeds_metrics(rows)
    # prof − kd per seed: 0.01, 0.00, 0.02 -> mean 0.01, s 0.01, CI 0.01 ± 4.3027·0.01/√3 = [-0.0148, 0.0348]
    assert (seeds["prof"]["delta"], seeds["prof"]["ci_low"], seeds["prof"]["ci_high"]) == (
        0.01,
        -0.0148,
        0.0348,
    )
    # prof − scratch per seed: 0.04, 0.04, 0.07 -> mean 0.05, s √0.0003 = 0.017321,
    # CI 0.05 ± 4.3027 · 0.017321/√3 = 0.05 ± 0.043027 = [0.0070, 0.0930]: better
    assert seeds["prof"]["root"] == "scratch" and seeds["prof"]["root_delta"] == 0.05
    assert (seeds["prof"]["root_ci_low"], seeds["prof"]["root_ci_high"]) == (0.007, 0.093)
    assert seeds["prof"]["root_verdict"] == "better" and "root" not in seeds["kd"]  # kd's baseline is the end
    text = build_markdown(ReportParts("h", {}, {}, rows, [], "", {}, {}))
    assert "| prof | prof → kd → scratch | 3 | +5.00 | [+0.70, +9.30] | better |" in text


def test_wide_csv_and_history(tmp_path):
    tsv = tmp_path / "acc.tsv"
    tsv.write_text("step\tacc\n1\t0.5\n2\t0.75\n")
    assert read_history(tsv) == ([1, 2], [0.5, 0.75])
    text = wide_csv({"a": ([1, 2], [0.5, 0.75]), "b": ([1], [0.25])}, scale=100, digits=1)
    assert text == "epoch,a,b\n1,50.0,25.0\n2,75.0,\n"


def test_live_tracker_step_is_the_epoch_count(tmp_path):
    from pipeline.tracking import LiveTracker

    t = LiveTracker(tmp_path / "live", params={"arch": "resnet8", "optim": {"epochs": 4}})
    for epoch in range(1, 5):
        t.log_epoch(epoch, {"val/acc": 0.1 * epoch})
    t.close({"resumed_from_epoch": 0})
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["step"] == 4 and math.isclose(summary["val"]["acc"], 0.4)
    assert read_history(tmp_path / "live" / "plots" / "metrics" / "val" / "acc.tsv")[0] == [1, 2, 3, 4]
    assert "arch: resnet8" in (tmp_path / "live" / "params.yaml").read_text()


REPO = Path(__file__).resolve().parents[1]


def dvc(cwd: Path, *args: str) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def dvc_repo(tmp_path):
    """A scratch git + DVC repository carrying the project's DVC config and plot templates."""
    import shutil
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    for rel in (".dvc/config", ".dvc/plots/overlay.json", "plots/offline.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)

    def commit() -> None:
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
        subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "run"],
            cwd=tmp_path,
            check=True,
        )

    return tmp_path, commit


def test_exp_show_top1_of_ten_models_fits_200_columns(dvc_repo):
    """Bound: unfiltered, the declared metrics of 10 models (2 exported, 2 seed groups) are 4 + 2 keys per
    model, 4 more per exported model and at most 7 per seed group; the README idiom keeping top-1 only fits
    a 200-column terminal."""
    root, commit = dvc_repo
    names = list(STUDENTS)  # 10 names, the longest 17 characters (professor_replace)
    evaluation = {
        n: {"top1": 0.8 + 0.001 * i, "top5": 0.99, "nll": 0.4, "ece": 0.01, "params": 77754, "size_mb": 0.297}
        for i, n in enumerate(names)
    }
    ex = {
        "top1": {"int8": 0.8},
        "size_bytes": {"int8": 132409},
        "latency": {"ort_fp32": {"b1": {"p50_ms": 0.07}}, "ort_int8": {"b1": {"p50_ms": 0.05}}},
    }
    from pipeline.evaluate import Entry

    entries = [
        Entry("students", n, n.split("_")[0], "scratch" if n.startswith("professor") else "") for n in names
    ]
    files = {
        "accuracy": accuracy_metrics(evaluation),
        "deploy": deploy_metrics(evaluation, {"kd": ex, "scratch": ex}),
        "seeds": seeds_metrics(seed_rows(entries, evaluation)),
    }
    (root / "results" / "metrics").mkdir(parents=True)
    for stem, d in files.items():
        (root / "results" / "metrics" / f"{stem}.json").write_text(json.dumps(d))
    (root / "dvc.yaml").write_text("metrics:\n" + "".join(f"  - results/metrics/{s}.json\n" for s in files))
    commit()
    header = dvc(root, "exp", "show", "--no-pager", "--csv").splitlines()[0].split(",")
    metric_cols = [
        c for c in header if c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
    ]
    # groups: professor_replace + professor_joint (2 seeds, paired with scratch) 7 keys; tolerant_g1 +
    # tolerant_g2 (2 seeds, no baseline) mean, std, n = 3 keys; single unpaired seeds add nothing
    assert len(metric_cols) == 4 * 10 + 2 * 10 + 4 * 2 + 7 + 3, metric_cols
    table = dvc(root, "exp", "show", "--no-pager", "--drop", ".*", "--keep", r"Experiment|.*\.top1$")
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 200, table
    assert all(f"{n}.top1" in table for n in names)


def test_dvc_sections_render_offline(dvc_repo, monkeypatch):
    """The report's outputs with the dvc.yaml sections of pipeline.report_dvc: `dvc plots show` renders every
    plot from the committed offline template (no script fetched over http) and the metrics load."""
    import yaml

    from pipeline.checks import load_params
    from pipeline.evaluate import model_entries
    from pipeline.report_dvc import dvc_sections

    root, commit = dvc_repo
    monkeypatch.chdir(root)
    fabricate(root)
    assert CliRunner().invoke(app, ["report"]).exit_code == 0
    # evaluate's
    (root / "results" / "metrics" / "accuracy.json").write_text(json.dumps({"kd": {"top1": 0.8}}))
    p = load_params(root / "params.yaml")
    sections = dvc_sections(model_entries(p), list(p.export.students))
    (root / "dvc.yaml").write_text(yaml.safe_dump(sections, sort_keys=False))
    assert "&id" not in (root / "dvc.yaml").read_text()  # no YAML anchors for a person to decode
    commit()
    dvc(root, "plots", "show", "-o", "out")
    html = (root / "out" / "index.html").read_text()
    assert "{scripts}" not in (REPO / "plots" / "offline.html").read_text()
    assert '<script src="http' not in html and "<title>kdpipe plots</title>" in html
    titles = [next(iter(x)) for x in sections["plots"] if isinstance(x, dict)]
    assert len(titles) == 5 and all(t in html for t in titles), titles
    assert html.count("vegaEmbed(") >= 5 and '"scheme": "category20"' in html  # the overlay template
    assert "acc_latency.png" in html
    shown = json.loads(dvc(root, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert set(files) == set(sections["metrics"]), files
    assert set(sections["artifacts"]) == {
        *TEACHERS,
        *STUDENTS,
        "kd-onnx",
        "kd-int8",
        "scratch-onnx",
        "scratch-int8",
    }


def test_the_data_line_names_models_trained_on_fewer_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = PARAMS
    for name in ("dkd", "fitnet"):
        params = params.replace(
            f"  {name}: {{arch: resnet8,", f"  {name}: {{arch: resnet8, train_subset: 500,"
        )
    assert params.count("train_subset: 500") == 2
    fabricate(tmp_path, params)
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    first = (tmp_path / "results" / "report.md").read_text().split("\n\n")[1]
    assert first.endswith(
        "Trained on fewer images (train_subset, the same images for each number): 500: dkd, fitnet."
    ), first
    fabricate(tmp_path)  # the same run with every model on the whole split: no such sentence
    assert CliRunner().invoke(app, ["report"]).exit_code == 0
    assert "train_subset" not in (tmp_path / "results" / "report.md").read_text()


def test_a_panel_validated_once_is_a_dot_per_model(tmp_path):
    from PIL import Image

    from pipeline.plots import Curve, plot_curves

    loss = [Curve(f"m{i}", [1, 2, 3], [1.0, 0.5, 0.25]) for i in range(30)]
    # eval_every: the last epoch only
    once = [Curve(f"m{i}", [3], [0.8], ([0.79], [0.81])) for i in range(30)]
    plot_curves({"validation top-1": once, "training loss": loss}, "t", tmp_path / "once.png")
    plot_curves({"validation top-1": loss, "training loss": loss}, "t", tmp_path / "lines.png")
    # 30 models named on the y axis need more height than the 4.2 inches of two line panels
    high, low = (Image.open(tmp_path / f).size[1] for f in ("once.png", "lines.png"))
    assert high > 1.2 * low
