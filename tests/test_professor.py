"""Professor model: losses by hand, networks, gradient routing, training, strategies, online vs cached,
stage."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn
import yaml

from pipeline import checkpoint
from pipeline.config import to_dict
from pipeline.errors import KdpipeError
from pipeline.evaluate import infer
from pipeline.job_inputs import make_loader
from pipeline.knowledge.professor import (
    ProfessorNet,
    ProfessorParams,
    ProfessorSource,
    load_professor,
    refine_splits,
    refined_source,
    target_metrics,
    targets_file,
)
from pipeline.losses import professor as L
from pipeline.losses.kd import kd_kl
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.methods.professor_job import ProfessorTrainer, frozen_call
from pipeline.params import OptimParams
from pipeline.sources import CachedLogits, OnlineTeachers
from pipeline.train import Loaders, fit

LN2 = math.log(2)


def test_losses_by_hand() -> None:
    zt, zp = torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.0, 0.0]])
    # p_t = [3/4, 1/4], p_p = [1/2, 1/2]: mean(|1/2 − 3/4|, |1/2 − 1/4|) = 0.25
    assert L.rec_loss(zp, zt, 1.0).item() == pytest.approx(0.25)
    # τ = 2: p_t = softmax([ln3/2, 0]) = [√3/(√3+1), 1/(√3+1)] = [0.633975, 0.366025]; mean |diff| = 0.133975
    assert L.rec_loss(zp, zt, 2.0).item() == pytest.approx(0.133975, abs=1e-6)
    # sigmoid(0) = 1/2: BCE(1/2, 1) = ln 2; real + fake = 2 ln 2; no real samples -> only the fake term
    assert L.adv_gen_loss(torch.zeros(3, 1)).item() == pytest.approx(LN2)
    assert L.adv_disc_loss(torch.zeros(2, 1), torch.zeros(3, 1)).item() == pytest.approx(2 * LN2)
    assert L.adv_disc_loss(torch.zeros(0, 1), torch.zeros(3, 1)).item() == pytest.approx(LN2)
    # D(real) = ln 3 -> sigmoid = 3/4 -> −ln(3/4); D(fake) = 0 -> ln 2
    assert L.adv_disc_loss(torch.tensor([[math.log(3)]]), torch.zeros(1, 1)).item() == pytest.approx(
        -math.log(0.75) + LN2
    )
    # mixture of [3/4, 1/4] and [1/4, 3/4] with w = 1/2 is [1/2, 1/2]; w = 1 is the teacher, w = 0 the
    # professor
    zq = torch.tensor([[0.0, math.log(3)]])
    for w, expect in ((0.5, [0.5, 0.5]), (1.0, [0.75, 0.25]), (0.0, [0.25, 0.75]), (0.25, [0.375, 0.625])):
        torch.testing.assert_close((L.mix_logits(zt, zq, w, 1.0) / 1.0).softmax(1), torch.tensor([expect]))
    # at τ = 4 the mixture is taken of the tempered distributions: softmax(mix/4) = w·p^4(z_t) +
    # (1−w)·p^4(z_q)
    m = 0.3 * (zt / 4).softmax(1) + 0.7 * (zq / 4).softmax(1)
    torch.testing.assert_close((L.mix_logits(zt, zq, 0.3, 4.0) / 4).softmax(1), m)


def test_joint_mixture_has_the_gradients_of_the_weighted_kls() -> None:
    zs = torch.randn(6, 5, requires_grad=True)
    zt, zp, w, tau = torch.randn(6, 5) * 3, torch.randn(6, 5) * 3, 0.3, 4.0
    (g_mix,) = torch.autograd.grad(kd_kl(zs, L.mix_logits(zt, zp, w, tau), tau), zs)
    (g_sum,) = torch.autograd.grad(w * kd_kl(zs, zt, tau) + (1 - w) * kd_kl(zs, zp, tau), zs)
    torch.testing.assert_close(g_mix, g_sum)


def test_target_metrics_by_hand() -> None:
    y = torch.tensor([0, 0])
    zt = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]).log_softmax(1)  # teacher: [3/4, 1/4] and [1/2, 1/2]
    zp = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]])  # refined: [1/2, 1/2] and [1/4, 3/4]
    m = target_metrics(zp, zt, y, 1.0)
    # top-1: teacher argmax [0, 0 (tie -> first)] -> 1.0; refined [0 (tie), 1] -> 0.5
    assert m["teacher_top1"] == 1.0 and m["refined_top1"] == 0.5
    # KL([.5,.5]‖[.75,.25]) = .5 ln(.5/.75) + .5 ln(.5/.25) = 0.143841; KL([.25,.75]‖[.5,.5]) = .25 ln .5 +
    # .75 ln 1.5 = 0.130812
    assert m["kl_refined_teacher"] == pytest.approx((0.143841 + 0.130812) / 2, abs=1e-5)
    # one non-target class: correlation undefined, every sample left out
    assert math.isnan(m["nontarget_corr"])
    y4 = torch.tensor([0, 0])
    pt = torch.tensor([[0.4, 0.1, 0.2, 0.3], [0.4, 0.1, 0.2, 0.3]])
    # non-targets ∝ teacher's, then reversed
    pp = torch.tensor([[0.7, 0.05, 0.1, 0.15], [0.7, 0.15, 0.1, 0.05]])
    r = target_metrics(pp.log(), pt.log(), y4, 1.0)["nontarget_corr"]
    assert r == pytest.approx((1.0 + -1.0) / 2, abs=1e-6)  # r = +1 and r = −1


def test_shapes_of_each_component() -> None:
    p = ProfessorParams()
    net = ProfessorNet(10, p)
    z, lat = net(torch.randn(8, 10), torch.arange(8) % 10, with_latent=True)
    assert z.shape == (8, 10) and lat.shape == (8, 64) and lat.abs().max() <= 1  # tanh latent
    assert net.repeat == 7 and net.generator[0].in_features == 64 + 7 * 10  # r = ceil(64/10) label copies
    assert ProfessorNet(100, p).generator[0].in_features == 64 + 100  # r = 1 for C = 100
    tr = ProfessorTrainer(Context(student=net, source=CachedLogits(torch.randn(1, 8, 10)), num_classes=10), p)
    assert tr.d_z(lat).shape == (8, 1) and tr.d_p(torch.randn(8, 20)).shape == (8, 1)
    assert [m.out_features for m in tr.d_z if isinstance(m, nn.Linear)] == [64, 32, 16, 1]
    assert [m.out_features for m in tr.d_p if isinstance(m, nn.Linear)] == [256, 64, 1]
    assert sum(q.numel() for q in net.parameters()) < 1_000_000  # spec §1.8.6 budget


def test_each_part_reaches_only_its_own_parameters() -> None:
    torch.manual_seed(0)
    c, b = 5, 16
    zt, y = torch.randn(b, c) * 3, torch.arange(b) % c
    tr = ProfessorTrainer(
        Context(student=ProfessorNet(c, ProfessorParams()), source=CachedLogits(zt[None]), num_classes=c),
        ProfessorParams(),
    ).train()
    out = tr((torch.zeros(b, 1), y, torch.arange(b)), 0)
    assert 0 < int((zt.argmax(1) == y).sum()) < b  # both real and fake samples reach D_p
    groups = {
        g: [q for n, q in tr.named_parameters() if n.startswith(g)]
        for g in ("student.encoder", "student.generator", "d_z", "d_p")
    }
    expect = {
        "rec": {"student.encoder", "student.generator"},
        "acc_ce": {"student.encoder", "student.generator"},
        "adv_z": {"student.encoder"},
        "adv_p": {"student.encoder", "student.generator"},
        "disc_z": {"d_z"},
        "disc_p": {"d_p"},
    }
    for part, owners in expect.items():
        for g, qs in groups.items():
            grads = torch.autograd.grad(out[part], qs, retain_graph=True, allow_unused=True)
            reached = any(gr is not None and gr.abs().sum() > 0 for gr in grads)
            assert reached == (g in owners), f"{part} {'does not reach' if g in owners else 'reaches'} {g}"
    # the total's gradient on each discriminator is exactly its own loss's gradient
    for g, part in (("d_z", "disc_z"), ("d_p", "disc_p")):
        for a, b_ in zip(
            torch.autograd.grad(out["loss"], groups[g], retain_graph=True),
            torch.autograd.grad(out[part], groups[g], retain_graph=True),
        ):
            torch.testing.assert_close(a, b_)
    # frozen_call leaves the discriminator's BN running statistics alone
    before = tr.d_z[1].running_mean.clone()
    frozen_call(tr.d_z, torch.randn(4, 64))
    assert torch.equal(before, tr.d_z[1].running_mean)


def _train(zt: torch.Tensor, y: torch.Tensor, p: ProfessorParams) -> ProfessorNet:
    c = zt.shape[1]
    tr = ProfessorTrainer(
        Context(student=ProfessorNet(c, p), source=CachedLogits(zt[None]), num_classes=c, epochs=p.epochs), p
    )
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    fit(
        tr,
        Loaders([(torch.zeros(len(i), 1), y[i], i) for i in order.split(64)]),
        OptimParams(**p.optim_args()),
    )
    return tr.student.eval()


def test_without_ce_and_adversarial_terms_the_professor_reproduces_the_teacher() -> None:
    torch.manual_seed(0)
    zt, y = torch.randn(256, 5) * 3, torch.randint(0, 5, (256,))
    p = dataclasses.replace(ProfessorParams(), lambda_acc=0.0, lambda_z=0.0, lambda_p=0.0, lr=2e-3, epochs=25)
    net = ProfessorNet(5, p).eval()
    before = target_metrics(net(zt, y).detach(), zt, y, 4.0)
    after = target_metrics(_train(zt, y, p)(zt, y).detach(), zt, y, 4.0)
    assert after["kl_refined_teacher"] < 0.1 * before["kl_refined_teacher"]
    assert after["nontarget_corr"] > 0.9


def _wrong_teacher(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """5 classes; the teacher's boost goes to the true class on ~70 % of samples, to the next class
    otherwise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 5
    zt = torch.randn(n, 5, generator=g) * 2
    target = torch.where(torch.rand(n, generator=g) < 0.3, (y + 1) % 5, y)
    zt[torch.arange(n), target] += 4
    return zt, y


def test_refined_targets_rank_the_true_class_first_more_often_than_the_teacher() -> None:
    torch.manual_seed(0)
    zt, y = _wrong_teacher(256, 0)
    net = _train(zt, y, dataclasses.replace(ProfessorParams(), lr=2e-3, epochs=15))
    zt2, y2 = _wrong_teacher(256, 1)  # held-out samples from the same teacher
    m = target_metrics(net(zt2, y2).detach(), zt2, y2, 4.0)
    assert m["teacher_top1"] < 0.8 and m["refined_top1"] > m["teacher_top1"] + 0.15
    assert m["nontarget_corr"] > 0.5  # inter-class structure is kept


class Identity(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return z


class Negate(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -z


def _step(method, batch, epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = method.train()(batch, epoch)
    return out["loss"].detach(), list(torch.autograd.grad(out["loss"], list(method.student.parameters())))


@pytest.mark.parametrize("base,args", [("kd", {"temperature": 4.0, "alpha": 0.9}), ("dkd", {"warmup": 0.0})])
def test_strategies_reduce_to_the_base_method_when_the_professor_is_the_identity(base, args) -> None:
    torch.manual_seed(0)
    student, teacher = (
        nn.Sequential(nn.Flatten(), nn.Linear(16, 5)),
        nn.Sequential(nn.Flatten(), nn.Linear(16, 5)),
    )
    batch = (torch.randn(8, 1, 4, 4), torch.arange(8) % 5, torch.arange(8))

    def ctx(prof=None):
        return Context(
            student=student,
            source=OnlineTeachers([teacher]),
            num_classes=5,
            epochs=4,
            assets={} if prof is None else {"professor": [prof]},
        )

    plain = REGISTRY[base](ctx(), dataclasses.replace(REGISTRY[base].Params(), **args))
    ref_loss, ref_grads = _step(plain, batch, 3)
    P = REGISTRY["professor"].Params
    for strategy in ("replace", "joint", "curriculum"):
        m = build_method(
            "professor", ctx(Identity()), P(strategy=strategy, joint_weight=0.3, base=base, base_args=args)
        )
        for epoch in (0, 3):  # curriculum: teacher in epochs 0-1, professor in 2-3
            loss, grads = _step(m, batch, epoch)  # dkd: warmup 0, no epoch dependence
            torch.testing.assert_close(loss, ref_loss)
            for a, b in zip(grads, ref_grads):
                torch.testing.assert_close(a, b)
    # with a professor that differs from the teacher, each strategy picks the right target
    # what a negating professor yields, idx = arange
    neg_source = CachedLogits(-teacher(batch[0]).detach()[None])
    neg = REGISTRY[base](
        Context(student=student, source=neg_source, num_classes=5, epochs=4),
        dataclasses.replace(REGISTRY[base].Params(), **args),
    )
    cur = build_method("professor", ctx(Negate()), P(strategy="curriculum", base=base, base_args=args))
    assert cur.mode(1) == "teacher" and cur.mode(2) == "professor"
    torch.testing.assert_close(_step(cur, batch, 1)[0], ref_loss)  # teacher phase
    # professor phase = KD from −z_t
    torch.testing.assert_close(_step(cur, batch, 2)[0], _step(neg, batch, 2)[0])
    rep = build_method("professor", ctx(Negate()), P(strategy="replace", base=base, base_args=args))
    torch.testing.assert_close(_step(rep, batch, 3)[0], _step(neg, batch, 3)[0])


def test_method_refuses_missing_assets_and_feature_methods() -> None:
    ctx = Context(student=nn.Linear(4, 3), source=OnlineTeachers([nn.Linear(4, 3)]), num_classes=3)
    with pytest.raises(KdpipeError, match="refine-targets"):
        build_method("professor", ctx, REGISTRY["professor"].Params())
    ctx.assets = {"professor": [Identity()]}
    with pytest.raises(KdpipeError, match="features"):
        build_method("professor", ctx, REGISTRY["professor"].Params(base="at"))
    with pytest.raises(KdpipeError, match="alpha"):
        build_method("professor", ctx, REGISTRY["professor"].Params(base_args={"alpah": 1}))


def _trained_bn(module: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """Give BN layers non-trivial running statistics, so eval mode matters; returns the module in eval
    mode."""
    module.train()(*inputs)
    return module.eval()


def test_online_and_cached_refined_targets_are_identical(tmp_path, tiny_data) -> None:
    from pipeline.models import create_model

    torch.manual_seed(0)
    teacher = _trained_bn(create_model("resnet8", 4, 1), torch.randn(16, 1, 16, 16) * 2 + 1)
    net = _trained_bn(ProfessorNet(4, ProfessorParams()), torch.randn(16, 4) * 3, torch.arange(16) % 4)
    path = tmp_path / "professor" / "t.pt"
    checkpoint.save(
        checkpoint.make_artifact(
            net,
            kind="professor",
            name="t",
            params=to_dict(ProfessorParams()),
            metrics={},
            num_classes=4,
            teacher="t",
        ),
        path,
    )
    plain = {s: make_loader(tiny_data, s, batch_size=100) for s in ("train", "val")}
    tables = refine_splits(ProfessorSource(OnlineTeachers([teacher]), [net]), plain, 4)
    assert (
        tables["train"].shape == (448, 4)
        and tables["val"].shape == (64, 4)
        and tables["train"].dtype == torch.float32
    )
    checkpoint.save({"train": tables["train"], "val": tables["val"]}, targets_file(path))
    loaded, art = load_professor(path)
    assert art["teacher"] == "t" and all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values())
    )
    loader = make_loader(tiny_data, "train", batch_size=32, train=True)  # shuffled, un-augmented
    teacher_table = infer(teacher, make_loader(tiny_data, "train", batch_size=64))
    online = refined_source(OnlineTeachers([teacher]), [path])  # loads the artifact
    cached = refined_source(CachedLogits(teacher_table[None]), [path])  # reads the .targets.pt next to it
    assert isinstance(online, ProfessorSource) and isinstance(cached, CachedLogits)
    for batch in loader:  # shuffled, un-augmented: the lookup by idx must match the online result
        torch.testing.assert_close(online.logits(batch), cached.logits(batch), atol=1e-5, rtol=1e-5)


# online teacher on augmented batches / teacher logits computed once
@pytest.mark.parametrize("augment", [True, False])
def test_refine_targets_stage_writes_artifact_targets_and_metrics(
    tmp_path, monkeypatch, tiny_data, make_artifact, augment
) -> None:
    from typer.testing import CliRunner

    from stages import app, load_all

    load_all()
    teacher = make_artifact("t")
    monkeypatch.chdir(tmp_path)
    checkpoint.save(tiny_data, "data/prepared/data.pt")
    (tmp_path / "models/teachers").mkdir(parents=True)
    teacher.rename(tmp_path / "models/teachers/t.pt")
    params = {
        "base": {"device": "cpu"},
        "data": {"source": "synthetic"},
        "teachers": {"t": {"arch": "resnet8"}},
        "professor": {"epochs": 1, "batch_size": 128, "augment": augment},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(app, ["refine-targets", "t"])
    assert res.exit_code == 0, res.output
    net, art = load_professor("models/knowledge/professor/t.pt")
    assert art["teacher_sha256"] == checkpoint.sha256("models/teachers/t.pt") and isinstance(
        net, ProfessorNet
    )
    assert (
        art["kind"] == "professor"
        and art["metrics"]["val/refined_top1"] >= 0
        and "teachers" not in art["params"]
    )
    targets = torch.load("models/knowledge/professor/t.targets.pt", weights_only=True)
    assert targets["train"].shape == (448, 4) and targets["val"].shape == (64, 4)
    assert targets["professor_sha256"] == checkpoint.sha256("models/knowledge/professor/t.pt")
    metrics = json.loads((tmp_path / "results/refine-targets/t/metrics.json").read_text())
    assert {"teacher_top1", "refined_top1", "kl_refined_teacher", "nontarget_corr"} <= set(metrics["val"])
    assert metrics["professor_params"] == sum(q.numel() for q in net.parameters())
    bad = CliRunner().invoke(app, ["refine-targets", "nope"])
    assert bad.exit_code == 2 and "no teacher 'nope'" in bad.output
