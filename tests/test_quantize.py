"""INT8 recipes, keep rules, the validation-budget fallback, and byte-identical exports.

Tiny hand-built models only: a mobile block (depthwise conv, hardswish, squeeze-excitation, channel
shuffle) at 16x16 and a 2-layer model whose INT8 version loses its signal by construction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pipeline.onnx_write import Normalized, export_onnx
from pipeline.parity import check_parity, to_unit
from pipeline.predict import make_session, run_logits
from pipeline.quant_budget import kernel_gains, node_errors, quantize_within_budget
from pipeline.quantize import (
    KEEP_RULES,
    RECIPES,
    Recipe,
    family_of,
    nodes_for,
    preprocess,
    quantize_int8,
    recipe_for,
)

ROOT = Path(__file__).resolve().parents[1]


class MobileBlock(nn.Module):
    """stem conv -> depthwise 3x3 + hardswish -> SE gate -> channel shuffle -> global pool -> linear."""

    def __init__(self, c: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.act = nn.Hardswish()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1), nn.Hardsigmoid()
        )
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.dw(torch.relu(self.stem(x))))
        h = h * self.se(h)
        n, c, hh, ww = h.shape
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)  # channel shuffle, 2 groups
        return self.fc(h.mean((2, 3)))


ART = {
    "arch": "mobile_block",
    "class_names": ["a", "b", "c"],
    "input_size": 16,
    "in_channels": 3,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
}


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    torch.manual_seed(0)
    model = MobileBlock().eval()
    d = tmp_path_factory.mktemp("mobile")
    paths = [d / "a.onnx", d / "b.onnx"]
    for p in paths:
        export_onnx(model, ART, "0" * 64, p)
    images = torch.randint(
        0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    return {"model": model, "paths": paths, "images": images, "dir": d}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_export_is_byte_identical_and_has_no_local_paths(mobile):
    a, b = mobile["paths"]
    assert _sha(a) == _sha(b)
    raw = a.read_bytes()
    for leak in (str(ROOT).encode(), b"site-packages", b'File "', b'.py"'):
        assert leak not in raw, leak
    assert {p.key for p in onnx.load(str(a)).metadata_props} >= {
        "kdpipe_format",
        "arch",
        "source_sha256",
    }  # ours stay


def test_mobile_block_exports_with_parity_and_quantizes(mobile, tmp_path):
    sess, _ = make_session(mobile["paths"][0], threads=1)
    wrapped = Normalized(mobile["model"], ART["mean"], ART["std"])
    rep, _, _ = check_parity(wrapped, sess, mobile["images"], atol=1e-4, rtol=1e-4)
    assert rep["max_abs_diff"] <= rep["tolerance"]
    out = [tmp_path / "q1.onnx", tmp_path / "q2.onnx"]
    for p in out:  # same file, images, n and seed: the INT8 file is byte-identical too
        quantize_int8(mobile["paths"][0], p, mobile["images"], n=32, recipe=RECIPES["mobilenet_v3"])
    assert _sha(out[0]) == _sha(out[1])
    assert b"kdpipe-quant-" not in out[0].read_bytes()  # no temporary path of the quantizer left inside
    zq = run_logits(make_session(out[0], threads=1)[0], to_unit(mobile["images"]))
    assert zq.shape == (48, 3)
    ops = {n.op_type for n in onnx.load(str(out[0])).graph.node}
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops  # the recipe's pooling rewrite


def test_keep_rules_find_the_mobile_parts(mobile, tmp_path):
    pre = tmp_path / "pre.onnx"
    preprocess(mobile["paths"][0], pre)
    g = onnx.load(str(pre)).graph
    op = {n.name: n.op_type for n in g.node}
    convs = [n.name for n in g.node if n.op_type == "Conv"]  # stem, depthwise, SE squeeze, SE excite
    assert len(convs) == 4
    assert KEEP_RULES["stem"](g) == convs[:1]
    assert KEEP_RULES["thin_stem"](g) == []  # 3 input channels x 3 x 3 = 27 >= 16: quantized
    assert KEEP_RULES["depthwise"](g) == [convs[1]]  # weight [8, 1, 3, 3], group 8
    assert [op[n] for n in KEEP_RULES["classifier"](g)] == ["Gemm"]
    se = KEEP_RULES["se"](g)
    assert convs[2] in se and convs[3] in se and op[se[-1]] == "Mul"  # squeeze, excite ... the gating Mul
    assert nodes_for(Recipe("x", keep=("stem", "depthwise")), g) == convs[:2]
    # stem conv -> relu -> the depthwise conv that alone reads it -> its hardswish (inlined: gate and Mul)
    block = KEEP_RULES["stem_block"](g)
    assert [op[n] for n in block] == ["Conv", "Relu", "Conv", "HardSigmoid", "Mul"]
    assert block[0] == convs[0] and block[2] == convs[1]


def test_stem_hardswish_fuses_only_the_stem_block_and_keeps_the_logits(mobile, tmp_path):
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    preprocess(mobile["paths"][0], plain)
    preprocess(mobile["paths"][0], fused, ("stem_hardswish", "saturate"))
    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    # the depthwise conv's hardswish is one node; the SE gate's HardSigmoid (outside the block) stays
    assert ops.count("HardSwish") == 1 and ops.count("HardSigmoid") == 1
    # saturate clips only the SE gate's input (-3, 3): a HardSwish left by the rewrite stays fp32, unclipped
    assert ops.count("Clip") == 1
    x = to_unit(mobile["images"])
    za = run_logits(make_session(plain, threads=1)[0], x)
    zb = run_logits(make_session(fused, threads=1)[0], x)
    np.testing.assert_allclose(zb, za, rtol=0, atol=1e-5)  # exact: HardSwish(t) = t * HardSigmoid(t)
    q = tmp_path / "q.onnx"
    info = quantize_int8(mobile["paths"][0], q, mobile["images"], n=32, recipe=RECIPES["mobilenet_v3"])
    assert info["fp32_nodes"][:1] == KEEP_RULES["stem"](onnx.load(str(plain)).graph)
    assert len(info["fp32_nodes"]) == 4  # stem conv, relu, depthwise conv, HardSwish


def test_saturation_clips_are_exact_and_every_node_is_named(mobile, tmp_path):
    plain, sat = tmp_path / "plain.onnx", tmp_path / "sat.onnx"
    preprocess(mobile["paths"][0], plain)
    preprocess(mobile["paths"][0], sat, ("saturate",))
    g = onnx.load(str(sat)).graph
    names = [n.name for n in g.node]
    assert all(names) and len(set(names)) == len(names)  # the exporter's inlined HardSwish nodes too
    consts = {t.name: float(onnx.numpy_helper.to_array(t)) for t in g.initializer if not t.dims}
    bounds = sorted([consts[i] for i in n.input[1:]] for n in g.node if n.op_type == "Clip")
    # torch's HardSigmoid: max(0, min(1, x/6 + 1/2)) is 0 for x <= -0.5 * 6 = -3 and 1 for x >= 0.5 * 6 = 3;
    # the hardswish x * HardSigmoid(x) has no upper saturation: only the lower clip
    assert bounds == [[-3.0], [-3.0, 3.0]]
    x = to_unit(mobile["images"])
    za = run_logits(make_session(plain, threads=1)[0], x)
    zb = run_logits(make_session(sat, threads=1)[0], x)
    np.testing.assert_allclose(zb, za, rtol=0, atol=1e-6)  # exact rewrite: the same fp32 logits


def test_family_of_and_recipe_for():
    assert family_of("resnet8") == "resnet_cifar" and family_of("tv_resnet18") == "resnet"
    assert (
        family_of("mobilenet_v3_small") == "mobilenet_v3"
        and family_of("shufflenet_v2_x0_5") == "shufflenet_v2"
    )
    assert family_of("something_new") == "default"
    assert recipe_for("efficientnet_b0").name == "efficientnet" and recipe_for("resnet8", "manual") is None
    assert set(RECIPES) >= {
        "resnet",
        "resnet_cifar",
        "mobilenet_v2",
        "mobilenet_v3",
        "shufflenet_v2",
        "efficientnet",
        "regnet",
        "convnext",
        "default",
    }
    with pytest.raises(Exception, match="not an INT8 recipe"):
        recipe_for("resnet8", "nope")


class Drowned(nn.Module):
    """Channel 0 carries the class (sign of the mean of input channel 0 minus 0.5); channel 1 is input
    channel 1 x 2000. Per-tensor INT8 of the shared feature map has a step of ~2000/255 ~ 8, so the signal
    channel (|v| <= 0.5) rounds to 0 and INT8 top-1 falls to chance, unless the head and its producer stay
    fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(2, 2, 1)
        self.head = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.feat.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2000.0]]).view(2, 2, 1, 1))
            self.feat.bias.copy_(torch.tensor([-0.5, -1000.0]))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).view(2, 2, 1, 1))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x)).mean((2, 3))


def _drowned_data(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 256, (n, 2, 4, 4), generator=g, dtype=torch.uint8)
    # class 0: mean > 0.5, class 1: < 0.5
    x[:, 0] = torch.where(y.view(-1, 1, 1) == 0, 200, 50).to(torch.uint8)
    return x, y.numpy()


def test_budget_fallback_keeps_the_sensitive_nodes_fp32(tmp_path):
    art = {
        "arch": "drowned",
        "class_names": ["p", "n"],
        "input_size": 4,
        "in_channels": 2,
        "mean": [0.0, 0.0],
        "std": [1.0, 1.0],
    }
    f32 = tmp_path / "d.onnx"
    export_onnx(Drowned().eval(), art, "0" * 64, f32)
    calib, _ = _drowned_data(64, 0)
    vx, vy = _drowned_data(64, 1)
    info = quantize_within_budget(
        f32,
        tmp_path / "d.int8.onnx",
        calib,
        to_unit(vx),
        vy,
        Recipe("plain", keep=()),
        max_drop=0.5,
        max_tries=3,
        n=64,
    )
    steps = info["fallback"]["steps"]
    # fp32 is 100 % right; INT8 of the drowned signal near chance (50 %)
    assert steps[0]["val_drop_points"] > 20
    assert info["within_budget"] and info["val_drop_points"] <= 0.5
    assert len(info["fp32_nodes"]) >= 2 and info["fallback"]["tries"] >= 1  # head + the conv feeding it
    zq = run_logits(make_session(tmp_path / "d.int8.onnx", threads=1)[0], to_unit(vx))
    assert (zq.argmax(1) == vy).mean() == 1.0  # the written file is the one that met the budget


def test_budget_that_cannot_be_met_keeps_best_try_and_flags_it(mobile, tmp_path, caplog):
    x = to_unit(mobile["images"])
    # labels = fp32's own answers: 100 %
    y = run_logits(make_session(mobile["paths"][0], threads=1)[0], x).argmax(1)
    info = quantize_within_budget(
        mobile["paths"][0],
        tmp_path / "m.int8.onnx",
        mobile["images"],
        x,
        y,
        RECIPES["mobilenet_v3"],
        max_drop=-1.0,
        max_tries=2,
        n=32,
    )
    # a drop >= 0 never meets -1: all tries used
    assert not info["within_budget"] and info["fallback"]["tries"] == 2
    assert all(s["added"] for s in info["fallback"]["steps"][1:])  # each try kept at least one more node fp32
    assert "exceeds export.int8_max_drop" in caplog.text


def test_node_errors_rank_the_drowned_head_first(tmp_path):
    art = {
        "arch": "drowned",
        "class_names": ["p", "n"],
        "input_size": 4,
        "in_channels": 2,
        "mean": [0.0, 0.0],
        "std": [1.0, 1.0],
    }
    f32, pre, q = tmp_path / "d.onnx", tmp_path / "pre.onnx", tmp_path / "q.onnx"
    export_onnx(Drowned().eval(), art, "0" * 64, f32)
    calib, _ = _drowned_data(32, 0)
    quantize_int8(f32, q, calib, n=32, recipe=Recipe("plain", keep=()))
    preprocess(f32, pre)
    errs = node_errors(pre, q, to_unit(calib))
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    # the head: its output error ~1 (signal lost) against a ~0 input error
    assert max(errs, key=errs.get) == convs[1]


def test_kernel_gains_find_the_node_that_fp32_inputs_rescue(tmp_path):
    art = {"arch": "drowned", "class_names": ["p", "n"], "input_size": 4, "in_channels": 2}
    f32, pre, q = tmp_path / "d.onnx", tmp_path / "pre.onnx", tmp_path / "q.onnx"
    export_onnx(Drowned().eval(), art | {"mean": [0.0, 0.0], "std": [1.0, 1.0]}, "0" * 64, f32)
    calib, _ = _drowned_data(32, 0)
    quantize_int8(f32, q, calib, n=32, recipe=Recipe("plain", keep=()))
    preprocess(f32, pre)
    gains = kernel_gains(pre, q, to_unit(calib), tmp_path)
    feat, head = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    assert set(gains) == {feat, head}
    # the head on the fp32 feature map sees the signal channel again: its error (~1) nearly all goes away;
    # feat in fp32 still has its output rounded in steps of ~8, which drowns the signal as before
    assert gains[head] > 0.9 and gains[feat] < 0.5


def test_no_validation_split_leaves_the_budget_unchecked(mobile, tmp_path, caplog):
    info = quantize_within_budget(
        mobile["paths"][0],
        tmp_path / "m.int8.onnx",
        mobile["images"],
        np.zeros((0,), np.float32),
        np.zeros((0,), np.int64),
        RECIPES["default"],
        max_drop=0.5,
        max_tries=2,
        n=16,
    )
    assert (
        info["within_budget"] is None and info["val_drop_points"] is None and info["fallback"]["tries"] == 0
    )
    assert "not checked" in caplog.text and (tmp_path / "m.int8.onnx").is_file()
