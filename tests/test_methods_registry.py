"""Registry-parametrized contract tests over every KD method (timm style), plus cached vs online targets.

Each method is built from a generic Context: a tiny resnet8 student, two tiny resnet8 teachers behind
OnlineTeachers, random 1x16x16 images, 4 classes, default Params. A method that needs assets the test
cannot build generically (a factor encoder, a probe choice...) has an asset factory in ASSETS below
(`ctx -> dict`); its result becomes `ctx.assets`. Knowledge jobs (`job=True`) are no student methods and
are checked by their own tests. If the default context is refused
(KdpipeError: e.g. a method that takes exactly one teacher, or a default K larger than 4 classes),
the test falls back to 1 teacher, then 10 classes, then both, and checks the contract there.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from pipeline.config import from_dict
from pipeline.errors import KdpipeError
from pipeline.knowledge.factor import random_factor
from pipeline.knowledge.professor import ProfessorNet, ProfessorParams
from pipeline.methods import REGISTRY, Context, Method, build_method, student_methods
from pipeline.models import create_model
from pipeline.sources import CachedLogits, OnlineTeachers

B, SIZE = 8, 16
STUDENT_METHODS = student_methods()


def _probe_assets(ctx: Context) -> dict:
    """A probe table choosing teacher 0 for every student stage."""
    K = ctx.source.num_teachers if ctx.source is not None else 1
    names, layers = [f"teacher{k}" for k in range(K)], list(range(-len(ctx.student.stage_channels), 0))
    return {
        "probes": {
            "teachers": names,
            "layers": layers,
            "acc": [[0.0] * len(layers) for _ in names],
            "choice": [0] * len(layers),
        },
        "teacher_names": names,
    }


def _factor_assets(ctx: Context) -> dict:
    """A random factor encoder matching the first teacher's last stage."""
    net = ctx.source.teachers[0] if ctx.source is not None else ctx.student
    return {"factor": random_factor(int(net.stage_channels[-1]))}


def _professor_assets(ctx: Context) -> dict:
    """A fresh (random, eval-mode) professor per teacher."""
    return {
        "professor": [
            ProfessorNet(ctx.num_classes, ProfessorParams()).eval() for _ in range(ctx.source.num_teachers)
        ]
    }


ASSETS = {
    "gpac": _probe_assets,
    "ie_kd": _factor_assets,
    "professor": _professor_assets,
}  # method -> ctx -> assets


def _batch(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 1, SIZE, SIZE, generator=g),
        torch.randint(0, num_classes, (B,), generator=g),
        torch.arange(B),
    )


def _context(name: str, teachers: int, classes: int, with_source: bool = True) -> Context:
    torch.manual_seed(0)

    def make():
        return create_model("resnet8", classes, 1)

    source = OnlineTeachers([make() for _ in range(teachers)]) if with_source else None
    ctx = Context(
        student=make(),
        source=source,
        num_classes=classes,
        in_channels=1,
        input_size=SIZE,
        epochs=2,
        make_student=make,
    )
    if name in ASSETS:
        ctx.assets = ASSETS[name](ctx)
    return ctx


def _build(name: str) -> tuple[Method, Context]:
    """The method on the default context, or on the first fallback context it accepts."""
    first = None
    for teachers, classes in ((2, 4), (1, 4), (2, 10), (1, 10)):
        ctx = _context(name, teachers, classes)
        try:
            return build_method(name, ctx, REGISTRY[name].Params()), ctx
        except KdpipeError as e:
            first = first or e
    raise AssertionError(f"method {name!r} refuses every test context: {first}")


def _teacher_params(ctx: Context) -> list[torch.nn.Parameter]:
    return list(ctx.source.parameters()) if ctx.source is not None else []


def test_knowledge_jobs_are_flagged_and_not_student_methods() -> None:
    jobs = {n for n, c in REGISTRY.items() if c.job}
    assert jobs == {"professor_job", "probes_job", "factor_job"} and not jobs & set(STUDENT_METHODS)
    assert {REGISTRY[n].kind for n in jobs} == {"professor", "probes", "factor"}
    # a job cannot be the professor's base either
    with pytest.raises(KdpipeError, match="not a base KD method"):
        build_method(
            "professor", _context("professor", 1, 4), REGISTRY["professor"].Params(base="factor_job")
        )


@pytest.mark.parametrize("name", STUDENT_METHODS)
def test_method_contract(name: str) -> None:
    method, ctx = _build(name)
    method.train()
    batch = _batch(ctx.num_classes)
    out = method(batch, 0)
    loss = out["loss"]
    assert loss.ndim == 0 and math.isfinite(loss.item()), f"{name}: loss {loss}"
    assert out["logits"].shape == (B, ctx.num_classes)
    for k, v in out.items():  # every logged part is a finite scalar
        if k != "logits" and torch.is_tensor(v):
            assert v.ndim == 0 and math.isfinite(v.item()), f"{name}: part {k} = {v}"
    loss.backward()
    trainable = {id(q) for q in method.trainable_parameters()}
    teacher = _teacher_params(ctx)
    assert not trainable & {id(q) for q in teacher}, f"{name}: teacher parameters are trainable"
    assert all(q.grad is None for q in teacher), f"{name}: a teacher parameter got a gradient"
    assert all(q.grad is not None for q in ctx.student.parameters()), (
        f"{name}: a student parameter got no gradient"
    )
    stray = [n for n, q in method.named_parameters() if q.grad is not None and id(q) not in trainable]
    assert not stray, f"{name}: gradients outside trainable_parameters: {stray[:3]}"
    assert method.exported(), f"{name}: exports nothing"


@pytest.mark.parametrize("name", STUDENT_METHODS)
def test_teachers_stay_frozen_and_in_eval(name: str) -> None:
    method, ctx = _build(name)
    if ctx.source is None:
        pytest.fail("the test context always has teachers")
    before = copy.deepcopy(ctx.source.state_dict())
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1, momentum=0.9)
    for epoch in (0, ctx.epochs - 1):  # first and last epoch: warm-ups and piecewise schedules both run
        method.train()
        out = method(_batch(ctx.num_classes, epoch), epoch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert math.isfinite(out["loss"].item())
    method.train()
    assert all(not m.training for m in ctx.source.modules()), f"{name}: a teacher module is in train mode"
    assert all(not q.requires_grad for q in ctx.source.parameters()), (
        f"{name}: a teacher parameter requires grad"
    )
    after = ctx.source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), (
        f"{name}: teacher weights or BN statistics moved"
    )


@pytest.mark.parametrize("name", [n for n in STUDENT_METHODS if not REGISTRY[n].needs_teachers])
def test_methods_without_teachers_run_without_a_source(name: str) -> None:
    ctx = None
    for classes in (4, 10):
        ctx = _context(name, 0, classes, with_source=False)
        try:
            method = build_method(name, ctx, REGISTRY[name].Params())
            break
        except KdpipeError:
            continue
    else:
        raise AssertionError(f"{name}: needs_teachers is False but it refuses to build without teachers")
    out = method.train()(_batch(ctx.num_classes), 0)
    assert math.isfinite(out["loss"].item()) and out["logits"].shape == (B, ctx.num_classes)


def test_cached_targets_equal_online_teacher_outputs() -> None:
    from pipeline.job_inputs import make_loader
    from stages.infer_targets import compute_targets

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    data = {
        "train_x": torch.randint(0, 256, (20, 1, SIZE, SIZE), dtype=torch.uint8, generator=g),
        "train_y": torch.randint(0, 4, (20,), generator=g),
        "val_x": torch.randint(0, 256, (6, 1, SIZE, SIZE), dtype=torch.uint8, generator=g),
        "val_y": torch.randint(0, 4, (6,), generator=g),
        "mean": [0.5],
        "std": [0.25],
        "class_names": list("abcd"),
        "pad": 0,
        "flip": False,
    }
    teachers = [create_model("resnet8", 4, 1) for _ in range(2)]
    for t in teachers:  # non-trivial BN statistics, so eval mode matters
        t.train()(torch.randn(16, 1, SIZE, SIZE) * 2 + 1)
    tables = [compute_targets(t, data, batch_size=7) for t in teachers]
    assert tables[0]["train"].shape == (20, 4) and tables[0]["val"].shape == (6, 4)
    assert tables[0]["train"].dtype == torch.float32
    cached, online = CachedLogits(torch.stack([tb["train"] for tb in tables])), OnlineTeachers(teachers)
    loader = make_loader(data, "train", batch_size=5, train=True)
    for batch in loader:  # shuffled order: the lookup by idx must still match
        torch.testing.assert_close(cached.logits(batch), online.logits(batch), atol=1e-5, rtol=1e-5)


def _params(name: str, **kw):
    return REGISTRY[name].Params(**kw)


def test_dml_loss_by_parts_and_every_peer_exported() -> None:
    import torch.nn.functional as F

    from pipeline.losses.kd import kd_kl

    ctx = _context("dml", 2, 4, with_source=False)
    m = build_method("dml", ctx, _params("dml", peers=3))
    ex = m.exported()
    assert (
        list(ex) == ["", "_peer1", "_peer2"]
        and len({id(v) for v in ex.values()}) == 3
        and ex[""] is ctx.student
    )
    m.eval()  # deterministic forward (BN running stats) so the direct computation sees the same logits
    batch = _batch(4)
    out = m(batch, 0)
    z = [p(batch[0]) for p in m.peers]
    # L = Σ_k [CE_k + (1/2)·Σ_{j≠k} KL(p_j ‖ p_k)] at τ = 1, w = 1
    want = sum(
        F.cross_entropy(z[k], batch[1]) + sum(kd_kl(z[k], z[j], 1.0) for j in range(3) if j != k) / 2
        for k in range(3)
    )
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(KdpipeError, match="dml.peers: must be >= 2"):  # refused when params load
        from_dict(REGISTRY["dml"].Params, {"peers": 1}, "dml")
    withkd = build_method("dml", _context("dml", 2, 4), _params("dml", teacher_weight=0.5))
    assert math.isfinite(withkd(batch, 0)["kd"].item())


def test_fitnet_connector_trains_but_is_not_exported() -> None:
    m = build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet"))
    ids = {id(q) for q in m.trainable_parameters()}
    assert all(id(q) in ids for q in m.connector.parameters())
    assert not any(k.startswith("connector") for k in m.exported()[""].state_dict())
    # resnet8 stage 2 (index 1) is 32 channels at 8x8 for a 16x16 input in student and teacher alike -> 1x1
    # conv
    assert m.connector.regs[0].conv.kernel_size == (1, 1)
    mt = build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet", teacher=-1))
    assert len(mt.connector.regs) == 2 and math.isfinite(mt(_batch(4), 0)["hint"].item())
    with pytest.raises(KdpipeError):
        build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet", hint=3))


def test_dkd_warmup_and_weighting() -> None:
    m = build_method("dkd", _context("dkd", 2, 4), _params("dkd"))
    # ramp = min(progress/20, 1): progress 1 -> 0.05, 10 -> 0.5, 20 and later -> 1
    assert (m.ramp(1.0), m.ramp(10.0), m.ramp(20.0), m.ramp(51.0)) == (0.05, 0.5, 1.0, 1.0)
    assert build_method("dkd", _context("dkd", 2, 4), _params("dkd", warmup=0.0)).ramp(0.0) == 1.0
    m.eval()  # outside training the ramp is per epoch, (e + 1)/W: epoch 9 gives 10/20 = 0.5
    m.progress = 0.25  # ignored in eval mode
    out = m(_batch(4), 9)
    want = out["ce"] + 0.5 * (1.0 * out["tckd"] + 8.0 * out["nckd"])
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_dkd_warmup_rises_per_step_with_fit_progress() -> None:
    ctx = _context("dkd", 1, 4)
    m = build_method("dkd", ctx, _params("dkd", warmup=2.0)).train()
    ramps = []
    for epoch in (0, 1):  # 4 steps per epoch; fit sets progress = e + (i + 1)/4 before step i
        for i in range(4):
            m.progress = epoch + (i + 1) / 4
            out = m(_batch(4), epoch)
            ramps.append((out["loss"] - out["ce"]).item() / (out["tckd"] + 8.0 * out["nckd"]).item())
    # progress over W = 2: 0.25/2, 0.5/2, 0.75/2, 1/2, then 1.25/2, 1.5/2, 1.75/2, 2/2
    want = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert ramps == pytest.approx(want, rel=1e-5)
    # a warm-up shorter than one epoch is possible: W = 0.5 reaches full weight at mid-epoch
    short = build_method("dkd", ctx, _params("dkd", warmup=0.5))
    # (1/4)/0.5, (2/4)/0.5, capped
    assert (short.ramp(0.25), short.ramp(0.5), short.ramp(1.0)) == (
        0.5,
        1.0,
        1.0,
    )


@pytest.mark.parametrize(
    "method, key, value, bound",
    [
        ("kd", "temperature", 0.0, "> 0"),
        ("kd", "alpha", 1.5, "<= 1"),
        ("dkd", "beta", -1.0, ">= 0"),
        ("dml", "peers", 1, ">= 2"),
        ("gpac", "rho_max", 2.0, "<= 1"),
        ("gpac", "beta_breakpoints", [0.5, 1.5], "<= 1"),
        ("ie_kd", "split", 1.0, "< 1"),
        ("ie_dml", "factor_channels", 0, ">= 1"),
        ("tolerant", "k", -1, ">= 0"),
        ("tolerant", "eta", -0.1, ">= 0"),
        ("generation", "lam", 2.0, "<= 1"),
        ("professor", "joint_weight", 1.1, "<= 1"),
        ("ce", "label_smoothing", 1.0, "< 1"),
        ("professor_job", "lr", 0.0, "> 0"),
        ("factor_job", "channels", 0, ">= 1"),
        ("probes_job", "epochs", 0, ">= 1"),
    ],
)
def test_out_of_range_method_params_are_refused_when_params_load(method, key, value, bound) -> None:
    with pytest.raises(KdpipeError, match=re.escape(f"students.s.{method}.{key}: must be {bound}")):
        from_dict(REGISTRY[method].Params, {key: value}, f"students.s.{method}")


def test_at_weighting_and_teacher_choice() -> None:
    m = build_method("at", _context("at", 2, 4), _params("at"))
    out = m(_batch(4), 0)
    assert out["loss"].item() == pytest.approx((out["ce"] + 1000 * out["at"]).item(), rel=1e-6)
    mean = build_method("at", _context("at", 2, 4), _params("at", teacher=-1, layers=[2]))
    assert math.isfinite(mean(_batch(4), 0)["at"].item())
    with pytest.raises(KdpipeError):
        build_method("at", _context("at", 2, 4), _params("at", teacher=2))


@pytest.mark.parametrize("rule", ["mean_prob", "aver", "ebkd", "camkd"])
def test_kd_runs_with_every_aggregation_rule(rule: str) -> None:
    m = build_method("kd", _context("kd", 2, 4), _params("kd", aggregate=rule))
    out = m(_batch(4), 0)
    out["loss"].backward()
    assert math.isfinite(out["kd"].item()) and all(q.grad is not None for q in m.student.parameters())


def test_tolerant_k_of_one_is_refused_when_params_load() -> None:
    with pytest.raises(KdpipeError, match=r"tolerant.k must be 0 \(from the class count\) or >= 2, got 1"):
        from_dict(REGISTRY["tolerant"].Params, {"k": 1}, "patriarchs.p.tolerant")


@pytest.mark.parametrize(
    "name, term", [("at", lambda o: 1000 * o["at"]), ("ie_kd", lambda o: 500 * (o["inh"] + o["exp"]))]
)
def test_feature_terms_ramp_in_over_their_share_of_training(name, term) -> None:
    ctx = _context(name, 1, 4)  # epochs = 2
    m = build_method(name, ctx, _params(name, warmup_frac=0.25))  # ramp over 0.25 * 2 = 0.5 epoch
    weights = []
    for progress in (0.125, 0.25, 0.5, 1.5):
        m.progress = progress
        out = m(_batch(4), int(progress))
        weights.append(((out["loss"] - out["ce"]) / term(out)).item())
    # progress / 0.5: 0.125 / 0.5 = 0.25, 0.25 / 0.5 = 0.5, then capped at 1
    assert weights == pytest.approx([0.25, 0.5, 1.0, 1.0], rel=1e-4)
    off = build_method(name, ctx, _params(name, warmup_frac=0.0))
    off.progress = 0.01
    out = off(_batch(4), 0)
    assert ((out["loss"] - out["ce"]) / term(out)).item() == pytest.approx(1.0, rel=1e-4)
    m.eval()  # outside training the ramp is per epoch: (0 + 1) / 0.5, capped
    assert m.warm(0.25, 0) == 1.0
