"""GPAC: adaptive multi-teacher KL, β(e), probe-guided teacher choice, the method and the probe-teachers
stage."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline import checkpoint
from pipeline.data.build import prepare
from pipeline.data.params import SyntheticParams
from pipeline.errors import KdpipeError
from pipeline.job_inputs import make_loader
from pipeline.job_spec import RunPaths, knowledge_job
from pipeline.jobs import run_job
from pipeline.knowledge.probes import ProbesParams, choose, load_probes, probe_layers
from pipeline.losses.at import at_loss
from pipeline.losses.gpac import beta_at, corrector_rho, gpac_kl, instruction_weights, teacher_kl
from pipeline.losses.kd import kd_kl, kl_to_target
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.params import BaseParams, DataParams, OptimParams
from pipeline.sources import OnlineTeachers
from pipeline.train import Loaders, fit

LN3 = math.log(3.0)


def _two_teachers() -> tuple[torch.Tensor, torch.Tensor]:
    # student p_s = [0.5, 0.5]; teacher A = the student; teacher B p = softmax([ln 3, 0]) = [0.75, 0.25]
    z_s = torch.zeros(1, 2)
    z_t = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]]])
    return z_s, z_t


def test_weights_are_a_distribution_favouring_the_closest_teacher() -> None:
    z_s, z_t = _two_teachers()
    kl = teacher_kl(z_s, z_t, 1.0)
    # KL_A = 0; KL_B = 0.75·ln(0.75/0.5) + 0.25·ln(0.25/0.5) = 0.304099 − 0.173287 = 0.130812
    assert kl[:, 0].tolist() == pytest.approx([0.0, 0.130812], abs=1e-6)
    w = instruction_weights(kl, t_w=1.0)
    # w_A = 1/(1 + e^−0.130812) = 1/1.877383 = 0.532656; w_B = 0.467344
    assert w[:, 0].tolist() == pytest.approx([0.532656, 0.467344], abs=1e-6)
    assert w.sum(0).item() == pytest.approx(1.0) and (w > 0).all()
    # a random batch with 3 teachers: weights sum to 1 per sample and order like −KL
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 7, generator=g), torch.randn(3, 5, 7, generator=g) * 3
    kl3, w3 = teacher_kl(zs, zt, 4.0), instruction_weights(teacher_kl(zs, zt, 4.0), 1.0)
    assert torch.allclose(w3.sum(0), torch.ones(5))
    assert torch.equal(w3.argmax(0), kl3.argmin(0))
    # ρ: the farthest teacher gets ρ_max, the one equal to the student gets 0
    assert corrector_rho(kl, 0.2)[:, 0].tolist() == pytest.approx([0.0, 0.2])


def test_adaptive_kl_by_hand() -> None:
    z_s, z_t = _two_teachers()
    # corrector off: L = w_A·0 + w_B·KL_B = 0.467344 · 0.130812 = 0.061134 (τ = 1)
    assert gpac_kl(z_s, z_t, 1.0, use_corrector=False).item() == pytest.approx(0.061134, abs=1e-6)
    # corrector on, ρ_B = 0.2: q_B = 0.8·[0.75, 0.25] + 0.2·[0.5, 0.5] = [0.7, 0.3];
    # KL(q_B‖p_s) = 0.7·ln 1.4 + 0.3·ln 0.6 = 0.235531 − 0.153248 = 0.082283; L = 0.467344·0.082283 = 0.038454
    assert gpac_kl(z_s, z_t, 1.0, rho_max=0.2).item() == pytest.approx(0.038454, abs=1e-6)
    # uniform weights, corrector off: (0 + 0.130812)/2 = 0.065406
    assert gpac_kl(z_s, z_t, 1.0, use_weights=False, use_corrector=False).item() == pytest.approx(
        0.065406, abs=1e-6
    )


def test_identical_teachers_equal_single_teacher_kd() -> None:
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) * 2
    three = zt.expand(3, 6, 5)
    ref = kd_kl(zs, zt, 4.0)
    assert gpac_kl(zs, three, 4.0, use_corrector=False).item() == pytest.approx(ref.item(), rel=1e-5)
    # corrector on: every KL_k equals the max, so ρ_k = ρ_max and the target is 0.8·p_t + 0.2·p_s;
    # the loss is KD to that mixed target, and by convexity of KL at most (1 − ρ_max)·KD
    mixed = 0.8 * F.softmax(zt / 4, 1) + 0.2 * F.softmax(zs / 4, 1)
    on = gpac_kl(zs, three, 4.0, rho_max=0.2)
    assert on.item() == pytest.approx(kl_to_target(mixed, zs, 4.0).item(), rel=1e-5)
    assert on.item() <= 0.8 * ref.item() + 1e-6


def test_gradient_flows_only_through_the_student() -> None:
    zs = torch.randn(4, 3, requires_grad=True)
    zt = torch.randn(2, 4, 3, requires_grad=True)
    gpac_kl(zs, zt, 2.0).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None or zt.grad.abs().sum() == 0


def test_beta_piecewise_levels_scale_with_epochs() -> None:
    levels, bp = (1000.0, 500.0, 100.0), (150 / 240, 210 / 240)
    # 240 epochs: e < 150 -> 1000; 150 <= e < 210 -> 500; e >= 210 -> 100
    assert [beta_at(e, 240, levels, bp) for e in (0, 149, 150, 209, 210, 239)] == [
        1000,
        1000,
        500,
        500,
        100,
        100,
    ]
    # 8 epochs: cuts at 8·0.625 = 5 and 8·0.875 = 7
    assert [beta_at(e, 8, levels, bp) for e in range(8)] == [1000] * 5 + [500] * 2 + [100]
    # 6 epochs: 6·0.625 = 3.75 -> 4 and 6·0.875 = 5.25 -> 5 (nearest epoch), so every level is used
    assert [beta_at(e, 6, levels, bp) for e in range(6)] == [1000] * 4 + [500, 100]
    # 4 levels, 3 cuts at 1/4, 1/2, 3/4 of 4 epochs: one epoch each
    assert [beta_at(e, 4, (4, 3, 2, 1), (0.25, 0.5, 0.75)) for e in range(4)] == [4, 3, 2, 1]


def test_probe_helpers() -> None:
    assert probe_layers([3, 4], []) == [-3, -2, -1]
    with pytest.raises(KdpipeError, match="probes.stages"):
        probe_layers([3], [-4])
    assert choose([[0.5, 0.9], [0.5, 0.95]]) == [0, 1]  # a tie goes to the earlier teacher
    with pytest.raises(KdpipeError, match="probe"):
        load_probes({"teachers": ["a"], "layers": [-1], "acc": [[1.0]], "choice": [3]})


def _synthetic() -> dict:
    return prepare(
        DataParams(source="synthetic", val_size=128, synthetic=SyntheticParams(train=512, test=32)), seed=0
    )


def _save_teacher(model: torch.nn.Module, d: dict, path) -> None:
    checkpoint.save(
        checkpoint.make_artifact(
            model,
            arch="resnet8",
            arch_kwargs={},
            num_classes=4,
            in_channels=1,
            input_size=16,
            mean=d["mean"],
            std=d["std"],
            class_names=d["class_names"],
            params={},
            metrics={},
            kind="teacher",
            name=path.stem,
        ),
        path,
    )


def test_probes_choose_the_trained_teacher(tmp_path) -> None:
    torch.manual_seed(0)
    d = _synthetic()
    trained, rand = create_model("resnet8", 4, 1), create_model("resnet8", 4, 1)
    ce = build_method(
        "ce", Context(student=trained, num_classes=4, in_channels=1, input_size=16), REGISTRY["ce"].Params()
    )
    fit(
        ce,
        Loaders(make_loader(d, "train", batch_size=64, train=True)),
        OptimParams(epochs=2, batch_size=64, lr=0.05),
    )
    _save_teacher(rand, d, tmp_path / "random.pt")
    _save_teacher(trained, d, tmp_path / "trained.pt")
    # the random teacher comes first, so a tie would pick it: choosing "trained" is not a tie-break
    job = knowledge_job(
        "probes_job",
        "probes",
        ProbesParams(stages=[-2, -1], epochs=6, batch_size=64),
        [("random", tmp_path / "random.pt", "resnet8"), ("trained", tmp_path / "trained.pt", "resnet8")],
    )
    res = run_job(job, BaseParams(device="cpu"), d, RunPaths(tmp_path / "probes.pt"))
    table = load_probes(res.artifact)
    assert table["layers"] == [-2, -1] and table["choice"] == [1, 1] and table["kind"] == "probes"
    assert all(table["acc"][1][j] > table["acc"][0][j] for j in range(2))
    assert res.metrics["choice_teacher"] == {"stage[-2]": "trained", "stage[-1]": "trained"}


def _ctx(assets: dict | None = None, **kw) -> Context:
    torch.manual_seed(0)
    teachers = [create_model("resnet8", 4, 1).eval() for _ in range(2)]
    ctx = Context(
        student=create_model("resnet8", 4, 1),
        source=OnlineTeachers(teachers),
        num_classes=4,
        in_channels=1,
        input_size=16,
        epochs=8,
    )
    layers = [-3, -2, -1]  # a probe table choosing teacher 0 for every stage of the resnet8 student
    table = {
        "teachers": ["teacher0", "teacher1"],
        "layers": layers,
        "acc": [[0.0] * 3] * 2,
        "choice": [0] * 3,
    }
    ctx.assets = {"probes": table, "teacher_names": ["teacher0", "teacher1"]} if assets is None else assets
    return ctx


def test_all_parts_off_is_cross_entropy() -> None:
    ctx = _ctx(assets={})  # nothing needed when the attention loss is off
    p = REGISTRY["gpac"].Params(
        alpha=0.0, use_attention=False, use_weights=False, use_corrector=False, use_probe=False
    )
    m = build_method("gpac", ctx, p)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    out = m((x, y, torch.arange(4)), 0)
    assert torch.equal(out["loss"], F.cross_entropy(out["logits"], y))
    assert set(out) == {"loss", "logits", "ce"}


def test_method_total_and_probe_mapping() -> None:
    ctx = _ctx()
    m = build_method("gpac", ctx, REGISTRY["gpac"].Params())
    assert m.pairs == [(-3, 0), (-2, 0), (-1, 0)]
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    out = m((x, y, torch.arange(4)), 6)  # epoch 6 of 8: 6 >= 5 and < 7 -> β = 500
    ft, zt = ctx.source.features((x,))
    fs, z = ctx.student.forward_stages(x)
    sa = sum(at_loss(fs[l], ft[0][l]) for l in (-3, -2, -1))
    assert out["sa"].item() == pytest.approx(sa.item(), rel=1e-5)
    assert out["mt"].item() == pytest.approx(gpac_kl(z, zt, 4.0).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["ce"] + out["mt"] + 500 * out["sa"]).item(), rel=1e-5)
    # the probe table names teachers; they are mapped to the student's order by name
    table = {"teachers": ["b", "a"], "layers": [-2, -1], "acc": [[0.9, 0.1], [0.2, 0.8]], "choice": [0, 1]}
    assert build_method("gpac", _ctx({"probes": table, "teacher_names": ["a", "b"]}), m.p).pairs == [
        (-2, 1),
        (-1, 0),
    ]
    with pytest.raises(KdpipeError, match="'c'"):
        build_method(
            "gpac", _ctx({"probes": table | {"teachers": ["c", "a"]}, "teacher_names": ["a", "b"]}), m.p
        )


def test_probe_teachers_stage(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from stages import app, load_all

    load_all()
    monkeypatch.chdir(tmp_path)
    d = _synthetic()
    checkpoint.save(d, "data/prepared/data.pt")
    for i, name in enumerate(("ta", "tb")):
        torch.manual_seed(i)
        art = checkpoint.make_artifact(
            create_model("resnet8", 4, 1),
            arch="resnet8",
            arch_kwargs={},
            num_classes=4,
            in_channels=1,
            input_size=16,
            mean=d["mean"],
            std=d["std"],
            class_names=d["class_names"],
            params={},
            metrics={},
            kind="teacher",
            name=name,
        )
        checkpoint.save(art, f"models/teachers/{name}.pt")
    params = {
        "base": {"device": "cpu"},
        "teachers": {"ta": {"arch": "resnet8"}, "tb": {"arch": "resnet8"}},
        "probes": {"teachers": ["ta", "tb"], "epochs": 1, "batch_size": 128},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(app, ["probe-teachers"])
    assert res.exit_code == 0, res.output
    saved = load_probes("models/knowledge/probes.pt")
    assert saved["teachers"] == ["ta", "tb"] and saved["teacher_sha256"]["ta"] == checkpoint.sha256(
        "models/teachers/ta.pt"
    )
    metrics = json.loads((tmp_path / "results/probe-teachers/metrics.json").read_text())
    assert set(metrics["acc"]["tb"]) == {"stage[-3]", "stage[-2]", "stage[-1]"}
    assert (tmp_path / "results/probe-teachers/heatmap.png").read_bytes()[:4] == b"\x89PNG"
