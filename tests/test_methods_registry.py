"""Registry-parametrized contract tests over every KD method (timm style), plus cached vs online targets.

Each method is built from a generic Context: a tiny resnet8 student, two tiny resnet8 teachers behind
OnlineTeachers, random 1x16x16 images, 4 classes, default Params. A method that needs assets the test
cannot build generically (a factor encoder, a probe choice...) declares a classmethod
`test_assets(ctx) -> dict`; its result becomes `ctx.assets`. If the default context is refused
(KdpipeError: e.g. a method that takes exactly one teacher, or a default K larger than 4 classes),
the test falls back to 1 teacher, then 10 classes, then both, and checks the contract there.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from pipeline.errors import KdpipeError
from pipeline.methods import REGISTRY, Context, Method, build_method
from pipeline.models import create_model
from pipeline.sources import CachedLogits, OnlineTeachers

B, SIZE = 8, 16


def _batch(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, SIZE, SIZE, generator=g), torch.randint(0, num_classes, (B,), generator=g), torch.arange(B)


def _context(name: str, teachers: int, classes: int, with_source: bool = True) -> Context:
    torch.manual_seed(0)
    make = lambda: create_model("resnet8", classes, 1)  # noqa: E731
    source = OnlineTeachers([make() for _ in range(teachers)]) if with_source else None
    ctx = Context(student=make(), source=source, num_classes=classes, in_channels=1, input_size=SIZE, epochs=2,
                  make_student=make)
    cls = REGISTRY[name]
    if hasattr(cls, "test_assets"):
        ctx.assets = cls.test_assets(ctx)
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


@pytest.mark.parametrize("name", sorted(REGISTRY))
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
    assert all(q.grad is not None for q in ctx.student.parameters()), f"{name}: a student parameter got no gradient"
    stray = [n for n, q in method.named_parameters() if q.grad is not None and id(q) not in trainable]
    assert not stray, f"{name}: gradients outside trainable_parameters: {stray[:3]}"
    assert method.exported(), f"{name}: exports nothing"


@pytest.mark.parametrize("name", sorted(REGISTRY))
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
    assert all(not q.requires_grad for q in ctx.source.parameters()), f"{name}: a teacher parameter requires grad"
    after = ctx.source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name}: teacher weights or BN statistics moved"


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if not c.needs_teachers))
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
    from pipeline.data import DeviceLoader
    from stages.infer_targets import compute_targets

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    data = {"train_x": torch.randint(0, 256, (20, 1, SIZE, SIZE), dtype=torch.uint8, generator=g),
            "train_y": torch.randint(0, 4, (20,), generator=g),
            "val_x": torch.randint(0, 256, (6, 1, SIZE, SIZE), dtype=torch.uint8, generator=g),
            "val_y": torch.randint(0, 4, (6,), generator=g), "mean": [0.5], "std": [0.25], "class_names": list("abcd")}
    teachers = [create_model("resnet8", 4, 1) for _ in range(2)]
    for t in teachers:  # non-trivial BN statistics, so eval mode matters
        t.train()(torch.randn(16, 1, SIZE, SIZE) * 2 + 1)
    tables = [compute_targets(t, data, batch_size=7) for t in teachers]
    assert tables[0]["train"].shape == (20, 4) and tables[0]["val"].shape == (6, 4)
    assert tables[0]["train"].dtype == torch.float32
    cached, online = CachedLogits(torch.stack([tb["train"] for tb in tables])), OnlineTeachers(teachers)
    loader = DeviceLoader(data["train_x"], data["train_y"], data["mean"], data["std"], batch_size=5, shuffle=True, augment=False)
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
    assert list(ex) == ["", "_peer1", "_peer2"] and len({id(v) for v in ex.values()}) == 3 and ex[""] is ctx.student
    m.eval()  # deterministic forward (BN running stats) so the direct computation sees the same logits
    batch = _batch(4)
    out = m(batch, 0)
    z = [p(batch[0]) for p in m.peers]
    # L = Σ_k [CE_k + (1/2)·Σ_{j≠k} KL(p_j ‖ p_k)] at τ = 1, w = 1
    want = sum(F.cross_entropy(z[k], batch[1]) + sum(kd_kl(z[k], z[j], 1.0) for j in range(3) if j != k) / 2 for k in range(3))
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(KdpipeError):
        build_method("dml", _context("dml", 2, 4), _params("dml", peers=1))
    withkd = build_method("dml", _context("dml", 2, 4), _params("dml", teacher_weight=0.5))
    assert math.isfinite(withkd(batch, 0)["kd"].item())


def test_fitnet_connector_trains_but_is_not_exported() -> None:
    m = build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet"))
    ids = {id(q) for q in m.trainable_parameters()}
    assert all(id(q) in ids for q in m.connector.parameters())
    assert not any(k.startswith("connector") for k in m.exported()[""].state_dict())
    # resnet8 stage 2 (index 1) is 32 channels at 8x8 for a 16x16 input in student and teacher alike -> 1x1 conv
    assert m.connector.regs[0].conv.kernel_size == (1, 1)
    mt = build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet", teacher=-1))
    assert len(mt.connector.regs) == 2 and math.isfinite(mt(_batch(4), 0)["hint"].item())
    with pytest.raises(KdpipeError):
        build_method("fitnet", _context("fitnet", 2, 4), _params("fitnet", hint=3))


def test_dkd_warmup_and_weighting() -> None:
    m = build_method("dkd", _context("dkd", 2, 4), _params("dkd"))
    # no step count known: per epoch, min((e + 1)/20, 1): epoch 0 -> 0.05, epoch 9 -> 0.5, epoch 19 and later -> 1
    assert (m.ramp(0), m.ramp(9), m.ramp(19), m.ramp(50)) == (0.05, 0.5, 1.0, 1.0)
    assert build_method("dkd", _context("dkd", 2, 4), _params("dkd", warmup=0.0)).ramp(0) == 1.0
    m.eval()  # evaluation batches do not advance the warm-up: epoch 9 gives the per-epoch 0.5
    out = m(_batch(4), 9)
    want = out["ce"] + 0.5 * (1.0 * out["tckd"] + 8.0 * out["nckd"])
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_dkd_warmup_rises_per_step_and_restarts_with_the_epoch() -> None:
    ctx = _context("dkd", 1, 4)
    ctx.steps_per_epoch = 4
    m = build_method("dkd", ctx, _params("dkd", warmup=2.0)).train()
    ramps = []
    for epoch, steps in ((0, 4), (1, 2), (1, 2)):  # the last pair: two more steps of epoch 1
        for _ in range(steps):
            out = m(_batch(4), epoch)
            ramps.append((out["loss"] - out["ce"]).item() / (out["tckd"] + 8.0 * out["nckd"]).item())
    # progress = e + (i + 1)/4 over W = 2: 0.25/2, 0.5/2, 0.75/2, 1/2, then 1.25/2, 1.5/2, 1.75/2, 2/2
    want = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert ramps == pytest.approx(want, rel=1e-5)
    # a warm-up shorter than one epoch is now possible: W = 0.5 reaches full weight at mid-epoch
    short = build_method("dkd", ctx, _params("dkd", warmup=0.5))
    assert (short.ramp(0, 0), short.ramp(0, 1), short.ramp(0, 3)) == (0.5, 1.0, 1.0)  # (1/4)/0.5, (2/4)/0.5, capped


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
