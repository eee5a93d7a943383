"""IE-KD: factor distances, exploration gradient, ie_kd/ie_dml against their base methods, factor
pre-training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import checkpoint
from pipeline.data.build import prepare
from pipeline.data.params import DataParams, SyntheticParams
from pipeline.errors import KdpipeError
from pipeline.knowledge.factor import FactorParams, load_factor, make_factor, random_factor, split_indices
from pipeline.losses.ie import d1, exploration_loss, inheritance_loss, reconstruction_l1
from pipeline.methods import Context
from pipeline.methods.ce import CrossEntropy
from pipeline.methods.dml import DML
from pipeline.methods.factor_job import FactorTrainer
from pipeline.methods.ie_dml import IEDML
from pipeline.methods.ie_kd import IEKD
from pipeline.methods.kd import KD
from pipeline.models import create_model, num_parameters
from pipeline.params import OptimParams
from pipeline.sources import OnlineTeachers
from pipeline.train import Loaders, fit


def v(*xs: float) -> torch.Tensor:
    """One sample as a (1, len, 1, 1) feature map."""
    return torch.tensor(xs).view(1, -1, 1, 1)


def test_d1_identical_is_zero_and_scale_free():
    a = torch.randn(3, 8, 2, 2)
    assert d1(a, a).item() == 0.0
    assert d1(a, 5 * a).item() == pytest.approx(0.0, abs=1e-7)  # φ removes the per-sample scale


def test_d1_orthogonal_hand_computed():
    # φ(3,0,0,0) = (1,0,0,0), φ(0,2,0,0) = (0,1,0,0): |diff| = (1,1,0,0), mean over 4 = 0.5
    assert d1(v(3, 0, 0, 0), v(0, 2, 0, 0)).item() == pytest.approx(0.5)
    # φ(3,4,0,0) = (0.6,0.8,0,0), φ(0,0,0,5) = (0,0,0,1): |diff| = (0.6,0.8,0,1), sum 2.4, mean 0.6
    assert inheritance_loss(v(3, 4, 0, 0), v(0, 0, 0, 5)).item() == pytest.approx(0.6)
    assert exploration_loss(v(3, 4, 0, 0), v(0, 0, 0, 5)).item() == pytest.approx(-0.6)  # "l1": −D₁


def test_exploration_cos_and_reconstruction_hand_computed():
    # sample 0: cos((3,4),(4,3)) = (12+12)/25 = 0.96; sample 1: cos((1,0),(−1,0)) = −1; mean |cos| =
    # (0.96+1)/2 = 0.98
    exp_f = torch.cat([v(3, 4), v(1, 0)])
    t_f = torch.cat([v(4, 3), v(-1, 0)])
    assert exploration_loss(exp_f, t_f, form="cos").item() == pytest.approx(0.98)
    assert exploration_loss(v(1, 0), v(0, 7), form="cos").item() == pytest.approx(0.0)  # orthogonal: minimum
    # |(1,2,3,4) − (1,1,1,1)| = (0,1,2,3), mean 6/4 = 1.5
    assert reconstruction_l1(v(1, 2, 3, 4), v(1, 1, 1, 1)).item() == pytest.approx(1.5)


@pytest.mark.parametrize("form", ["l1", "cos"])
def test_exploration_gradient_pushes_away_from_teacher(form):
    torch.manual_seed(0)
    f_t = torch.randn(4, 8, 3, 3)
    f_exp = (f_t + 0.3 * torch.randn_like(f_t)).requires_grad_(True)  # starts close to the teacher
    before = d1(f_exp, f_t).item()
    exploration_loss(f_exp, f_t, form=form).backward()
    with torch.no_grad():
        f_exp -= 1.0 * f_exp.grad / f_exp.grad.norm()  # one normalised gradient-descent step
    assert d1(f_exp, f_t).item() > before


def _setup(teacher_arch: str = "resnet8"):
    torch.manual_seed(0)
    teacher = create_model(teacher_arch, 4, 1).eval()
    student = create_model("resnet8", 4, 1)
    source = OnlineTeachers([teacher])
    batch = (torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(6))
    return student, source, batch


def _iekd(student, source, **kw) -> IEKD:
    ctx = Context(student=student, source=source, num_classes=4, in_channels=1, input_size=8)
    ctx.assets = {
        "factor": random_factor(int(source.teachers[0].stage_channels[-1]))
    }  # a random teacher factor
    return IEKD(ctx, IEKD.Params(**kw))


def test_iekd_without_ie_terms_equals_ce_and_kd():
    student, source, batch = _setup()
    ie = _iekd(student, source, lambda_inh=0.0, lambda_exp=0.0)
    ce = CrossEntropy(Context(student=student), CrossEntropy.Params())
    out = ie(batch, 0)
    assert torch.equal(out["loss"], ce(batch, 0)["loss"])
    assert out["inh"] > 0 and out["exp"] < 0  # the parts are computed, only their weights are 0
    ie_kd = _iekd(student, source, lambda_inh=0.0, lambda_exp=0.0, kd_alpha=0.9, temperature=4.0)
    kd = KD(Context(student=student, source=source), KD.Params(temperature=4.0, alpha=0.9))
    torch.testing.assert_close(ie_kd(batch, 0)["loss"], kd(batch, 0)["loss"], rtol=0, atol=1e-6)


def test_iekd_full_loss_and_exported_student_is_plain():
    student, source, batch = _setup("resnet20")
    m = _iekd(student, source, divide="random", divide_seed=3)
    out = m(batch, 0)
    # 500·inh + 500·exp on top of CE, parts unweighted
    torch.testing.assert_close(out["loss"], out["ce"] + 500 * out["inh"] + 500 * out["exp"])
    out["loss"].backward()
    assert m.enc_inh.net[1].weight.grad is not None and m.teacher_encoder.net[1].weight.grad is None
    assert sorted(torch.cat([m.inh_index, m.exp_index]).tolist()) == list(range(64))  # a permutation, 32 + 32
    assert {"inh_index", "exp_index"} <= set(m.state_dict())  # saved with the training state
    assert any(k.startswith("enc_exp.") for k in m.state_dict())
    fresh = create_model("resnet8", 4, 1)
    exported = m.exported()
    assert list(exported) == [""]
    assert set(exported[""].state_dict()) == set(fresh.state_dict())
    assert num_parameters(exported[""]) == num_parameters(fresh)
    m.train()
    assert not m.teacher_encoder.training and not m.source.training


def test_iekd_refuses_missing_or_mismatched_factor(tmp_path):
    student, source, _ = _setup()
    ctx = Context(student=student, source=source, assets={"factor": tmp_path / "nope.pt"})
    with pytest.raises(KdpipeError, match="pretrain-factor"):
        IEKD(ctx, IEKD.Params())
    ctx.assets = {"factor": random_factor(32)}  # the teacher has 64 last-stage channels
    with pytest.raises(KdpipeError, match="channels"):
        IEKD(ctx, IEKD.Params())
    with pytest.raises(KdpipeError, match="split"):
        split_indices(64, 0.0)
    assert split_indices(6, 0.5)[0].tolist() == [0, 1, 2]  # natural: first floor(C/2) channels


def test_factor_artifact_roundtrip_weights_only(tmp_path):
    art = random_factor(16, 8, seed=1)
    checkpoint.save(art, tmp_path / "f.pt")
    assert torch.load(tmp_path / "f.pt", weights_only=True)["channels"] == 8
    enc, meta = load_factor(tmp_path / "f.pt")
    ref, _ = load_factor(art)
    x = torch.randn(2, 16, 3, 3)
    assert torch.equal(enc(x), ref(x)) and meta["in_channels"] == 16
    assert not any(q.requires_grad for q in enc.parameters()) and not enc.training
    with pytest.raises(KdpipeError, match="another version"):
        load_factor(make_factor(enc, teacher="t", teacher_sha256="abc"), teacher_sha256="def")


def test_factor_pretraining_with_fit_lowers_reconstruction():
    torch.manual_seed(0)
    teacher = create_model("resnet8", 4, 1).eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 4, torch.arange(16))]
    trainer = FactorTrainer(Context(student=None, source=OnlineTeachers([teacher])), FactorParams(channels=8))
    assert trainer.student.encoder.cout == 8 and not {id(q) for q in teacher.parameters()} & {
        id(q) for q in trainer.trainable_parameters()
    }
    teacher_before = {k: t.clone() for k, t in teacher.state_dict().items()}
    res = fit(
        trainer, Loaders(batches, batches), OptimParams(epochs=10, lr=0.1, schedule="constant", amp="off")
    )
    # train-mode L_rec per epoch (BN on batch statistics): the first epoch starts near 0.45 on these
    # features because the decoder's last BN emits unit-variance maps for targets of mean |f| ≈ 0.1
    rec = [h["train/rec"] for h in res.history]
    assert rec[-1] < 0.6 * rec[0]
    # the job's own validation
    assert "train/acc" not in res.final and {"val/rec", "val/teacher_acc"} <= set(res.final)
    assert trainer.exported() == {}
    # teacher untouched (BN too)
    assert all(torch.equal(teacher_before[k], t) for k, t in teacher.state_dict().items())


def test_ie_dml_cross_targets_detached_and_two_plain_exports():
    student, _, batch = _setup()
    ctx = Context(student=student, make_student=lambda: create_model("resnet8", 4, 1))
    m = IEDML(ctx, IEDML.Params())
    out = m(batch, 0)
    assert out["kl"] >= 0 and out["rec"] > 0 and out["exp"] < 0
    out["inh"].backward()  # A's inheritance term: B's factor is a detached target
    assert all(q.grad is None for q in m.peer.parameters()) and all(
        q.grad is None for q in m.ae_b.parameters()
    )
    assert any(q.grad is not None for q in m.student.parameters())
    fresh = set(create_model("resnet8", 4, 1).state_dict())
    assert {k: set(n.state_dict()) for k, n in m.exported().items()} == {"": fresh, "_peer1": fresh}


def test_ie_dml_without_ie_terms_equals_dml():
    student, _, batch = _setup()

    def make():  # the same peer initialisation for both methods
        torch.manual_seed(7)
        return create_model("resnet8", 4, 1)

    ctx = Context(student=student, make_student=make)
    ie = IEDML(ctx, IEDML.Params(lambda_inh=0.0, lambda_exp=0.0, rec_weight=0.0))
    o = ie(batch, 0)
    torch.testing.assert_close(o["loss"], o["ce"] + o["ce_peer"] + o["kl"] + o["kl_peer"])
    torch.testing.assert_close(
        o["loss"], DML(ctx, DML.Params(kl_weight=1.0))(batch, 0)["loss"], rtol=0, atol=1e-6
    )


def test_pretrain_factor_stage_writes_artifact_and_metrics(tmp_path, monkeypatch):
    from stages.pretrain_factor import pretrain_factor_cmd

    monkeypatch.chdir(tmp_path)
    dp = DataParams(source="synthetic", val_size=16, synthetic=SyntheticParams(train=64, test=16, size=8))
    data = prepare(dp, 0)
    checkpoint.save(data, "data/prepared/data.pt")
    teacher = create_model("resnet8", 4, 1)
    art = checkpoint.make_artifact(
        teacher,
        arch="resnet8",
        arch_kwargs={},
        num_classes=4,
        in_channels=1,
        input_size=8,
        mean=data["mean"],
        std=data["std"],
        class_names=data["class_names"],
        params={},
        metrics={},
        kind="teacher",
        name="t",
    )
    checkpoint.save(art, "models/teachers/t.pt")
    Path("params.yaml").write_text(
        yaml.safe_dump(
            {
                "base": {"device": "cpu"},
                "data": {"source": "synthetic", "val_size": 16},
                "teachers": {"t": {"arch": "resnet8"}},
                "factor": {"teachers": ["t"], "channels": 8, "epochs": 1, "batch_size": 32},
            }
        )
    )
    pretrain_factor_cmd(name="t", params=Path("params.yaml"))
    enc, meta = load_factor(next(Path("models").rglob("factor/t.pt")))
    assert meta["teacher"] == "t" and meta["teacher_sha256"] == checkpoint.sha256("models/teachers/t.pt")
    assert (meta["in_channels"], meta["channels"]) == (64, 8) and meta["kind"] == "factor"
    metrics = json.loads(Path("results/pretrain-factor/t/metrics.json").read_text())
    assert metrics["train/rec"] > 0 and metrics["val/rec"] > 0 and metrics["epochs"] == 1
