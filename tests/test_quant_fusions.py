"""The fp32 rewrites applied before INT8 quantization: same logits, and the ops ORT can run on integers.

Tiny hand-built models exported with kdpipe's exporter and run under ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from pipeline.onnx_write import export_onnx
from pipeline.parity import to_unit
from pipeline.predict import make_session, run_logits
from pipeline.quantize import RECIPES, preprocess, quantize_int8


class Hard(nn.Module):
    """hardswish -> SE gate (hardsigmoid) -> channel shuffle -> mean -> linear; `mode` adds the cases where
    the scaled tensor meets an op that cannot absorb the factor (a residual Add) or is the graph output."""

    def __init__(self, mode: str = "se", c: int = 4) -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        self.fc = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        h = nn.functional.hardswish(a)
        if self.mode == "add":  # Add(scaled, unscaled): needs the true value
            return self.fc((h + a).mean((2, 3)))
        if self.mode == "output":  # the logits themselves come out of a HardSigmoid
            return nn.functional.hardsigmoid(self.fc(h.mean((2, 3))))
        gate = nn.functional.hardsigmoid(self.excite(torch.relu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        h = h * gate
        n, c, hh, ww = h.shape
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)
        return self.fc(h.mean((2, 3)))


ART = {"class_names": ["a", "b", "c"], "input_size": 8, "in_channels": 3, "mean": [0.5] * 3}
ART["std"] = [0.25] * 3


def _export(mode: str, tmp_path) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = Hard(mode).eval()
    path = tmp_path / f"{mode}.onnx"
    export_onnx(model, ART | {"arch": f"hard_{mode}"}, "0" * 64, path)
    return model, path


def _images(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


def _weights(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("mode", ["se", "add", "output"])
def test_hard_sigmoid_rewrite_keeps_the_logits_and_removes_every_hardsigmoid(mode, tmp_path):
    _, path = _export(mode, tmp_path)
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    preprocess(path, plain, ("saturate",))
    preprocess(path, fused, ("saturate", "hard_sigmoid"))
    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    assert "HardSigmoid" in [n.op_type for n in onnx.load(str(plain)).graph.node]
    assert "HardSigmoid" not in ops and "Clip" in ops and "Add" in ops
    x = to_unit(_images())
    za = run_logits(make_session(plain, threads=1)[0], x)
    zb = run_logits(make_session(fused, threads=1)[0], x)
    assert np.abs(za).max() > 1e-3  # the logits are not all zero: the comparison means something
    np.testing.assert_allclose(zb, za, rtol=1e-5, atol=1e-6)  # exact up to fp32 rounding


def test_hard_sigmoid_factor_lands_in_the_next_weights(tmp_path):
    model, path = _export("se", tmp_path)
    fused = tmp_path / "fused.onnx"
    preprocess(path, fused, ("saturate", "hard_sigmoid"))
    g = onnx.load(str(fused)).graph
    w = _weights(fused)
    consts = sorted(float(v) for k, v in w.items() if k.endswith(("_shift", "_top")))
    # torch's hardsigmoid: alpha 1/6, beta 1/2 -> Add(t, beta / alpha = 3), Clip(0, 1 / alpha = 6), twice
    assert consts == [3.0, 3.0, 6.0, 6.0]
    squeeze = next(n for n in g.node if n.op_type == "Conv" and w[n.input[1]].shape == (2, 4, 1, 1))
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    # the squeeze conv reads the hardswish output alone: factor 1/6; the classifier reads hardswish x gate:
    # (1/6) * (1/6) = 1/36, carried through the shuffle's Reshape / Transpose and the mean
    np.testing.assert_allclose(w[squeeze.input[1]], model.squeeze.weight.detach().numpy() / 6, rtol=1e-6)
    np.testing.assert_allclose(w[gemm.input[1]], model.fc.weight.detach().numpy() / 36, rtol=1e-6)
    assert not any(k.endswith("_factor") for k in w)  # no explicit Mul was needed


def test_hard_sigmoid_meets_an_add_or_the_output_through_an_explicit_mul(tmp_path):
    for mode in ("add", "output"):
        _, path = _export(mode, tmp_path)
        fused = tmp_path / f"{mode}.fused.onnx"
        preprocess(path, fused, ("saturate", "hard_sigmoid"))
        g = onnx.load(str(fused)).graph
        factors = [float(v) for k, v in _weights(fused).items() if k.endswith("_factor")]
        assert factors == [pytest.approx(1 / 6)]
        assert [o.name for o in g.output] == [o.name for o in onnx.load(str(path)).graph.output]


def test_mobilenet_v3_recipe_runs_hardswish_on_integers(tmp_path):
    _, path = _export("se", tmp_path)
    q = tmp_path / "q.onnx"
    images = _images(32)
    quantize_int8(path, q, images, n=32, recipe=RECIPES["mobilenet_v3"])
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    # the SE gate's HardSigmoid runs as a quantized Add and Clip; the stem's hardswish (stem block, fp32)
    # is one HardSwish node that ORT's fp32 Conv fuses
    assert "HardSigmoid" not in ops and ops.count("HardSwish") == 1
    zq = run_logits(make_session(q, threads=1)[0], to_unit(images))
    zf = run_logits(make_session(path, threads=1)[0], to_unit(images))
    assert zq.shape == zf.shape == (32, 3)
    # INT8 stays close to fp32: error well under the logits' spread
    assert np.abs(zq - zf).max() < 0.1 * (zf.max() - zf.min())


class Stem(nn.Module):
    """conv -> relu -> mean -> linear; `twice` also reads the normalised input in a second place."""

    def __init__(self, twice: bool = False) -> None:
        super().__init__()
        self.twice = twice
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(h + x.mean((1, 2, 3))[:, None] if self.twice else h)


def _export_stem(tmp_path, twice: bool = False) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = Stem(twice).eval()
    path = tmp_path / f"stem{int(twice)}.onnx"
    export_onnx(model, ART | {"arch": "stem", "std": [0.5, 0.25, 2.0]}, "0" * 64, path)
    return model, path


def test_input_scale_moves_the_division_by_std_into_the_stem_weights(tmp_path):
    model, path = _export_stem(tmp_path)
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    preprocess(path, plain)
    preprocess(path, fused, ("input_scale",))
    assert "Div" in [n.op_type for n in onnx.load(str(plain)).graph.node]
    g = onnx.load(str(fused)).graph
    assert [n.op_type for n in g.node][:2] == ["Sub", "Conv"]  # (x - mean) goes straight into the conv
    conv = next(n for n in g.node if n.op_type == "Conv")
    w, w0 = _weights(fused)[conv.input[1]], model.conv.weight.detach().numpy()
    # std (0.5, 0.25, 2.0): input channel c of every filter is divided by std_c, i.e. times 2, 4, 0.5
    for c, times in enumerate((2.0, 4.0, 0.5)):
        np.testing.assert_allclose(w[:, c], w0[:, c] * times, rtol=1e-6)
    assert not any(list(t.dims) == [1, 3, 1, 1] and "std" in t.name for t in g.initializer)  # no dead std
    x = to_unit(_images())
    za = run_logits(make_session(plain, threads=1)[0], x)
    zb = run_logits(make_session(fused, threads=1)[0], x)
    assert np.abs(za).max() > 1e-3
    np.testing.assert_allclose(zb, za, rtol=1e-5, atol=1e-6)  # zero padding of x - mean is unchanged


def test_input_scale_leaves_a_normalised_input_that_is_read_twice(tmp_path):
    _, path = _export_stem(tmp_path, twice=True)
    fused = tmp_path / "fused.onnx"
    preprocess(path, fused, ("input_scale",))
    assert "Div" in [n.op_type for n in onnx.load(str(fused)).graph.node]  # the mean still needs x / std


def test_stem_block_stops_where_another_node_reads_the_stem(tmp_path):
    from pipeline.onnx_graph import stem_block

    for mode, ops in (("se", ["Conv", "HardSigmoid", "Mul"]), ("add", ["Conv"])):
        _, path = _export(mode, tmp_path)
        pre = tmp_path / f"{mode}.pre.onnx"
        preprocess(path, pre)
        # se: the hardswish output feeds the pool and the gating Mul, not a depthwise conv: the block ends;
        # add: the conv output is also read by the residual Add, so it has no activation of its own
        assert [n.op_type for n in stem_block(onnx.load(str(pre)).graph)] == ops
