"""Tolerant teacher (TSD), KD in generations, generation ensembles and chain order."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import yaml

from pipeline import checkpoint
from pipeline.checks import parse_params
from pipeline.ensemble import EnsembleModel, load_ensemble, mean_prob_logits
from pipeline.errors import KdpipeError
from pipeline.evaluate import infer
from pipeline.generations import generation_order, known_models, lineage
from pipeline.losses.tsd import top_score_difference
from pipeline.methods import Context, build_method
from pipeline.methods.ce import CrossEntropy
from pipeline.methods.generation import Generation
from pipeline.methods.kd import KD
from pipeline.methods.tolerant import Tolerant
from pipeline.models import create_model
from pipeline.params import ModelParams
from pipeline.sources import OnlineTeachers

# Logits z = log p give softmax(z) = p exactly (Σp = 1), so the probabilities below are the inputs.
P = torch.tensor([[0.50, 0.20, 0.15, 0.10, 0.05], [0.50, 0.20, 0.15, 0.10, 0.05]])
Z = P.log()
Y = torch.tensor([0, 2])  # sample 0: GT is the top class; sample 1: GT (0.15) is third


def test_tsd_hand_computed():
    # K=3, GT primary, mean of the K−1=2 best others:
    #   sample 0: 0.50 − (0.20 + 0.15)/2 = 0.50 − 0.175 = 0.325
    #   sample 1: 0.15 − (0.50 + 0.20)/2 = 0.15 − 0.350 = −0.200
    #   batch mean: (0.325 − 0.200)/2 = 0.0625
    assert top_score_difference(Z, Y, 3).item() == pytest.approx(0.0625, abs=1e-6)
    assert top_score_difference(Z, Y, 3, reduction="none").tolist() == pytest.approx([0.325, -0.2], abs=1e-6)
    # divisor "k" (the reimplementation's sum/K): 0.50 − 0.35/3 = 0.38333; 0.15 − 0.70/3 = −0.08333; mean 0.15
    assert top_score_difference(Z, Y, 3, divisor="k").item() == pytest.approx(0.15, abs=1e-6)
    # primary "top1": sample 1's primary becomes class 0 (0.50), so it equals sample 0: 0.325 each
    assert top_score_difference(Z, Y, 3, primary="top1").item() == pytest.approx(0.325, abs=1e-6)
    # K = C = 5: every other class counts: 0.50 − (0.20+0.15+0.10+0.05)/4 = 0.50 − 0.125 = 0.375
    assert top_score_difference(Z[:1], Y[:1], 5).item() == pytest.approx(0.375, abs=1e-6)


def test_tsd_k2_is_gap_to_best_other():
    # K=2: p_gt − max_{c≠gt} p_c: sample 0: 0.50 − 0.20 = 0.30; sample 1: 0.15 − 0.50 = −0.35; mean −0.025
    assert top_score_difference(Z, Y, 2, reduction="none").tolist() == pytest.approx([0.30, -0.35], abs=1e-6)
    assert top_score_difference(Z, Y, 2).item() == pytest.approx(-0.025, abs=1e-6)


def test_tsd_rejects_bad_k():
    for k in (1, 6):
        with pytest.raises(KdpipeError, match="K must be"):
            top_score_difference(Z, Y, k)


def test_tsd_gradient_lowers_gt_and_raises_runner_ups():
    z = Z[:1].clone().requires_grad_(True)  # GT = class 0 (0.50); runner-ups for K=3: classes 1, 2
    top_score_difference(z, Y[:1], 3).backward()
    g = z.grad[0]
    # d/dz_gt = p_gt(1 − p_gt) + p_gt·(p_1 + p_2)/2 > 0; d/dz_r = −p_r[p_gt + (1 − p_1 − p_2)/2] < 0
    # by hand: 0.5·0.5 + 0.5·0.175 = 0.3375; −0.2·(0.5 + 0.325) = −0.165; −0.15·0.825 = −0.12375
    assert g[:3].tolist() == pytest.approx([0.3375, -0.165, -0.12375], abs=1e-6)
    with torch.no_grad():  # one SGD step on the logits: GT probability down, runner-ups up
        p_new = (z - 0.5 * z.grad).softmax(1)[0]
    assert p_new[0] < 0.50 and p_new[1] > 0.20 and p_new[2] > 0.15


def _ctx(num_classes: int = 5, teachers: list[nn.Module] | None = None, seed: int = 0) -> Context:
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))
    return Context(
        student=student,
        source=OnlineTeachers(teachers) if teachers else None,
        num_classes=num_classes,
        in_channels=3,
    )


def _batch(num_classes: int = 5):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(8, 3, 2, 2, generator=g),
        torch.randint(0, num_classes, (8,), generator=g),
        torch.arange(8),
    )


def test_tolerant_eta1_equals_ce():
    batch = _batch()
    ce = CrossEntropy(_ctx(), CrossEntropy.Params())
    tol = Tolerant(_ctx(), Tolerant.Params(eta=1.0))
    a, b = ce(batch, 0), tol(batch, 0)
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["logits"], b["logits"])
    a["loss"].backward()
    b["loss"].backward()
    for pa, pb in zip(ce.trainable_parameters(), tol.trainable_parameters()):
        assert torch.equal(pa.grad, pb.grad)


def test_tolerant_mix_and_start_epoch():
    batch = _batch()
    tol = build_method("tolerant", _ctx(), Tolerant.Params(eta=0.6, k=3, start_epoch=2))
    before, after = tol(batch, 1), tol(batch, 2)
    assert torch.equal(before["loss"], before["ce"])  # epoch 1 < start_epoch 2: plain CE
    expected = 0.6 * after["ce"] + 0.4 * top_score_difference(after["logits"], batch[1], 3)
    assert after["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(KdpipeError, match="tolerant.k"):
        Tolerant(_ctx(), Tolerant.Params(k=6))


def test_generation_equals_kd_with_one_teacher():
    batch = _batch()
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    gen = Generation(_ctx(teachers=[teacher]), Generation.Params(lam=0.25, temperature=2.0))
    kd = KD(_ctx(teachers=[teacher]), KD.Params(temperature=2.0, alpha=0.75))
    a, b = gen(batch, 0), kd(batch, 0)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)
    assert a["kd"].item() > 0  # teacher and student differ, so the KL is strictly positive


def test_generation_student_tsd_and_single_teacher():
    batch = _batch()
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    out = Generation(_ctx(teachers=[teacher]), Generation.Params(lam=0.5, eta=0.9, k=3))(batch, 0)
    expected = 0.9 * (0.5 * out["ce"] + 0.5 * out["kd"]) + 0.1 * out["tsd"]
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(KdpipeError, match="exactly one teacher"):
        Generation(_ctx(teachers=[teacher, teacher]), Generation.Params())


class _Const(nn.Module):
    """A 'model' that returns fixed logits for every input row."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("z", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z.expand(x.shape[0], -1)


def test_ensemble_is_mean_of_softmaxes():
    # members' probabilities [0.5, 0.5] and [0.9, 0.1] -> mean [0.7, 0.3]
    ens = EnsembleModel([_Const([math.log(0.5), math.log(0.5)]), _Const([math.log(0.9), math.log(0.1)])])
    assert ens(torch.zeros(2, 1)).softmax(1).tolist()[0] == pytest.approx([0.7, 0.3], abs=1e-6)
    assert mean_prob_logits(torch.zeros(3, 1, 4)).exp().tolist()[0] == pytest.approx([0.25] * 4, abs=1e-7)


def _artifact(tmp_path, name: str, num_classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes, 1)
    art = checkpoint.make_artifact(
        model,
        arch="resnet8",
        arch_kwargs={},
        num_classes=num_classes,
        in_channels=1,
        input_size=8,
        mean=[0.5],
        std=[0.25],
        class_names=[str(i) for i in range(num_classes)],
        params={},
        metrics={},
        kind="student",
        name=name,
    )
    checkpoint.save(art, tmp_path / f"{name}.pt")
    return tmp_path / f"{name}.pt"


def test_load_ensemble_identical_members_equal_the_model(tmp_path):
    path = _artifact(tmp_path, "gen1")
    model, _ = checkpoint.load_model(path)
    ens, meta = load_ensemble([path, path, path], name="ens")
    x = torch.rand(4, 1, 8, 8)
    loader = [(x, torch.zeros(4, dtype=torch.long), torch.arange(4))]
    assert torch.allclose(infer(ens, loader).softmax(1), model(x).softmax(1), atol=1e-6)
    assert meta["kind"] == "ensemble" and meta["num_classes"] == 3 and len(meta["members"]) == 3
    with pytest.raises(KdpipeError, match="num_classes"):
        load_ensemble([path, _artifact(tmp_path, "other", num_classes=4)])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ensemble_exports_as_one_onnx_graph(tmp_path):
    # The TorchScript exporter keeps this test fast (~0.2 s); the dynamo exporter gives the same graph
    # output (checked by hand: max |diff| 0 at batch 5) but takes ~15 s on a shared 2-core CPU.
    ens, _ = load_ensemble([_artifact(tmp_path, "a", seed=0), _artifact(tmp_path, "b", seed=1)])
    torch.onnx.export(
        ens,
        (torch.rand(2, 1, 8, 8),),
        str(tmp_path / "ens.onnx"),
        input_names=["image"],
        output_names=["logits"],
        opset_version=18,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    x = torch.rand(5, 1, 8, 8)  # another batch size than the one exported with
    got = ort.InferenceSession(str(tmp_path / "ens.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )[0]
    assert torch.allclose(torch.from_numpy(got), ens(x), atol=1e-5)


def chain_yaml(gen1_teacher: str = "patriarchs/tol") -> str:
    """params.yaml text: a tolerant patriarch and three chained generations, listed out of order."""
    gen1 = (
        f"{{arch: resnet8, method: generation, teachers: [{gen1_teacher}], "
        "generation: {lam: 0.5, temperature: 1.0}}"
    )
    return f"""
patriarchs:
  tol: {{arch: resnet8, method: tolerant, tolerant: {{eta: 0.6, k: 5}}}}
generations:
  gen3: {{arch: resnet8, method: generation, teachers: [generations/gen2]}}
  gen1: {gen1}
  gen2: {{arch: resnet8, method: generation, teachers: [generations/gen1]}}
students:
  scratch: {{arch: resnet8}}
"""


def test_generation_order_follows_the_chain():
    p = parse_params(yaml.safe_load(chain_yaml()))
    assert p.patriarchs["tol"].args == Tolerant.Params(eta=0.6, k=5)
    assert p.generations["gen1"].args == Generation.Params(lam=0.5, temperature=1.0)
    assert generation_order(p.generations, "generations", known_models(p)) == ["gen1", "gen2", "gen3"]
    assert lineage("gen3", p.generations) == ["patriarchs/tol", "gen1", "gen2", "gen3"]


def test_generation_order_rejects_a_cycle():
    # gen1 taught by gen3, which descends from gen1: every link exists, so only the order check sees it
    raw = yaml.safe_load(chain_yaml("generations/gen3"))
    with pytest.raises(
        KdpipeError,
        match=(
            "generations/gen3 <- generations/gen2 <- generations/gen1 <- generations/gen3 "
            "teach each other in a cycle"
        ),
    ):
        parse_params(raw)  # the strict loader runs the order check, so a cycle fails when params load
    gens = {
        n: ModelParams(**{k: v for k, v in spec.items() if k in ("arch", "method", "teachers")})
        for n, spec in raw["generations"].items()
    }
    with pytest.raises(KdpipeError, match="cycle: gen3 <- gen2 <- gen1 <- gen3"):
        generation_order(gens, "generations")


@pytest.mark.parametrize(
    "gen1_teacher, match",
    [
        ("generations/gen0", "no generations entry 'gen0'"),  # missing link inside the chain
        ("patriarchs/typo", "not a model in params"),  # missing root
    ],
)
def test_generation_order_rejects_a_missing_link(gen1_teacher, match):
    raw = yaml.safe_load(chain_yaml(gen1_teacher))
    with pytest.raises(KdpipeError, match="not a model in params"):
        parse_params(raw)  # the strict loader refuses it first...
    gens = {
        n: ModelParams(**{k: v for k, v in spec.items() if k in ("arch", "method", "teachers")})
        for n, spec in raw["generations"].items()
    }
    with pytest.raises(KdpipeError, match=match):  # ...and the chain helper on its own, too
        generation_order(gens, "generations", known={"patriarchs/tol"})


def test_dvc_graph_orders_the_chain_and_isolates_it(tmp_path):
    # The project's own dvc.yaml and params.yaml, plus a chain, in a scratch DVC repo (no git).
    from dvc.repo import Repo

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.update({k: v for k, v in yaml.safe_load(chain_yaml()).items() if k != "students"})
    # the default profile's ensemble names generations this chain replaces
    raw["evaluate"].pop("ensembles", None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    from stages.dvc_yaml import expected

    (tmp_path / "dvc.yaml").write_text(expected(tmp_path / "params.yaml"))
    Repo.init(str(tmp_path), no_scm=True)
    graph = Repo(str(tmp_path)).index.graph  # edges point from a stage to the stages it depends on
    name = {s: s.addressing.rpartition(":")[2] for s in graph.nodes}
    needs = {(name[u], name[v]) for u, v in graph.edges}
    assert {
        ("distill-gen1", "train-teacher-tol"),
        ("distill-gen2", "distill-gen1"),
        ("distill-gen3", "distill-gen2"),
    } <= needs
    # what re-runs when the patriarch's η changes: the chain (and evaluate/report), never other models
    patriarch = next(s for s in graph.nodes if name[s] == "train-teacher-tol")
    downstream = {name[s] for s in nx.ancestors(graph, patriarch)}
    assert {"distill-gen1", "distill-gen2", "distill-gen3"} <= downstream
    trained = {n for n in downstream if n.startswith(("train-teacher-", "distill-"))}
    assert trained == {"distill-gen1", "distill-gen2", "distill-gen3"}, trained


def test_k_follows_the_class_count():
    from pipeline.losses.tsd import auto_k

    # max(2, round(sqrt(C) / 2)): sqrt 2 = 1.41 -> 0.71 -> 1 -> 2; sqrt 10 = 3.16 -> 1.58 -> 2;
    # sqrt 100 = 10 -> 5 (the paper's CIFAR-100 K); sqrt 1000 = 31.6 -> 15.8 -> 16
    assert [auto_k(c) for c in (2, 10, 100, 1000)] == [2, 2, 5, 16]
