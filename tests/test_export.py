"""Deployment: ONNX export + parity, metadata, INT8, `predict`, the standalone checker, and bad input.

One tiny resnet8 (4 classes, 1 channel, 16x16) is trained for a few steps on the separable synthetic
data and exported once through the real `export` stage (module fixture); the tests read its outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline import checkpoint
from pipeline.data.build import prepare
from pipeline.data.loaders import DeviceLoader
from pipeline.errors import KdpipeError
from pipeline.methods import Context, build_method
from pipeline.methods.ce import CrossEntropy
from pipeline.models import create_model
from pipeline.onnx_write import Normalized, export_onnx
from pipeline.params import DataParams, OptimParams, from_dict
from pipeline.parity import check_parity, onnx_accuracy, to_unit, torch_logits
from pipeline.predict import make_session, read_metadata, run_logits
from pipeline.quantize import quantize_int8
from pipeline.train import Loaders, fit
from stages import app, load_all

load_all()
ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "data": {"source": "synthetic", "val_size": 32, "synthetic": {"train": 256, "test": 64}},
    "students": {
        "tiny": {"arch": "resnet8", "method": "ce", "optim": {"epochs": 2, "batch_size": 32, "lr": 0.05}}
    },
    "export": {
        "calib_images": 64,
        "latency_runs": 3,
        "latency_warmup": 1,
        "batch_sizes": [1, 5],
        "threads": 1,
    },
}


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A DVC-like working directory with prepared data, a trained tiny student and its export."""
    root = tmp_path_factory.mktemp("deploy")
    old = os.getcwd()
    os.chdir(root)
    try:
        torch.manual_seed(0)
        data = prepare(from_dict(DataParams, PARAMS["data"], "data"), seed=0)
        checkpoint.save(data, "data/prepared/data.pt")
        model = create_model("resnet8", 4, 1)
        method = build_method(
            "ce", Context(student=model, num_classes=4, in_channels=1, input_size=16), CrossEntropy.Params()
        )
        loader = DeviceLoader(
            data["train_x"], data["train_y"], data["mean"], data["std"], batch_size=32, shuffle=True
        )
        fit(method, Loaders(loader), OptimParams(epochs=2, batch_size=32, lr=0.05))
        art = checkpoint.make_artifact(
            model,
            arch="resnet8",
            arch_kwargs={},
            num_classes=4,
            in_channels=1,
            input_size=16,
            mean=data["mean"],
            std=data["std"],
            class_names=data["class_names"],
            params={},
            metrics={},
            kind="student",
            name="tiny",
        )
        checkpoint.save(art, "models/students/tiny.pt")
        Path("params.yaml").write_text(yaml.safe_dump(PARAMS))
        res = run_cli("export", "tiny")
        assert res.exit_code == 0, res.output
        metrics = json.loads(Path("results/export/tiny/metrics.json").read_text())
    finally:
        os.chdir(old)
    return {
        "root": root,
        "data": data,
        "model": model.eval(),
        "art": art,
        "stdout": res.stdout,
        "metrics": metrics,
    }


def test_export_stage_writes_models_and_metrics(work):
    out = work["root"] / "models" / "export"
    assert sorted(f.name for f in out.iterdir()) == ["tiny.int8.onnx", "tiny.onnx"]  # no temporary files left
    m = work["metrics"]
    assert m["top1"]["fp32"] == m["top1"]["torch"] >= 0.9  # separable data; ORT equals torch
    assert m["parity"]["top1_agreement"] == 1.0 and m["parity"]["max_abs_diff"] <= 1e-4
    assert set(m["parity"]["max_abs_diff_by_batch"]) == {"1", "7"}
    assert m["size_bytes"]["int8"] < m["size_bytes"]["fp32"]
    assert set(m["latency"]) == {"torch_fp32", "ort_fp32", "ort_int8"} and set(m["latency"]["ort_int8"]) == {
        "b1",
        "b5",
    }
    assert m["env"]["exporter"] == "dynamo" and m["env"]["provider_used"] == "CPUExecutionProvider"
    assert "[torch.onnx]" not in work["stdout"]  # exporter progress lines are silenced
    assert m["top1"]["fp32"] == pytest.approx(onnx_accuracy(out / "tiny.onnx", work["data"]))


def test_export_metrics_int8_budget_recipe_and_throughput(work):
    m, out, data = work["metrics"], work["root"] / "models" / "export", work["data"]
    assert m["recipe"] == "resnet_cifar"  # resnet8's family
    assert (
        m["size_ratio"] == pytest.approx(m["size_bytes"]["int8"] / m["size_bytes"]["fp32"])
        and m["size_ratio"] < 0.6
    )
    first_conv = next(n.name for n in onnx.load(str(out / "tiny.onnx")).graph.node if n.op_type == "Conv")
    assert first_conv in m["fp32_nodes"]  # 1-channel 3x3 stem: K = 9 < 16, kept fp32 by the recipe
    for rt in ("ort_fp32", "ort_int8"):  # images/s at the p50: batch / seconds
        for b in ("b1", "b5"):
            assert m["images_per_s"][rt][b] == pytest.approx(
                int(b[1:]) / (m["latency"][rt][b]["p50_ms"] / 1e3)
            )
    vx, vy = to_unit(data["val_x"]), data["val_y"].numpy()

    def acc(f):
        return (run_logits(make_session(out / f, threads=1)[0], vx).argmax(1) == vy).mean()

    # val, not test
    assert m["int8_val_drop_points"] == pytest.approx(100 * (acc("tiny.onnx") - acc("tiny.int8.onnx")))
    assert m["quantization"]["val_images"] == 32 and m["int8_within_budget"] is (
        m["int8_val_drop_points"] <= 0.5
    )


def test_parity_at_batch_1_and_5(work):
    sess, _ = make_session(work["root"] / "models/export/tiny.onnx", threads=1)
    wrapped = Normalized(work["model"], work["art"]["mean"], work["art"]["std"]).eval()
    for b in (1, 5):
        x = to_unit(work["data"]["test_x"][:b])
        z = run_logits(sess, x)
        assert z.shape == (b, 4)
        np.testing.assert_allclose(z, torch_logits(wrapped, x), rtol=1e-3, atol=1e-4)


def test_metadata_present_and_parsed(work):
    path = work["root"] / "models/export/tiny.onnx"
    meta = read_metadata(path)
    assert meta["class_names"] == ["class0", "class1", "class2", "class3"]
    assert (meta["input_size"], meta["in_channels"], meta["arch"]) == (16, 1, "resnet8")
    assert meta["mean"] == pytest.approx(work["data"]["mean"]) and meta["std"] == pytest.approx(
        work["data"]["std"]
    )
    assert meta["source_sha256"] == checkpoint.sha256(work["root"] / "models/students/tiny.pt")
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == [
        "logits"
    ]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch axis is symbolic
    assert not list(path.parent.glob("*.data"))  # one self-contained file


def test_int8_same_interface_and_agrees(work):
    d = work["root"] / "models/export"
    q, f = read_metadata(d / "tiny.int8.onnx"), read_metadata(d / "tiny.onnx")
    assert q["quantization"]["activation_type"] == "u8" and q["quantization"]["calib_split"] == "train"
    assert {k: v for k, v in q.items() if k != "quantization"} == f
    sq, _ = make_session(d / "tiny.int8.onnx", threads=1)
    assert [i.name for i in sq.get_inputs()] == ["image"] and [o.name for o in sq.get_outputs()] == ["logits"]
    x = to_unit(work["data"]["test_x"])
    zq, zf = run_logits(sq, x, batch_size=7), run_logits(make_session(d / "tiny.onnx", threads=1)[0], x)
    assert (zq.argmax(1) == zf.argmax(1)).mean() >= 0.9
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(d / "tiny.int8.onnx")).graph.node)


def _conv_weight_is_int8(proto: onnx.ModelProto, conv: onnx.NodeProto) -> bool:
    """In QDQ format a quantized conv reads its weight through a DequantizeLinear node."""
    return any(n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1] for n in proto.graph.node)


@pytest.mark.parametrize("fp32_stem", [True, False])
def test_int8_stem_conv_stays_fp32_only_when_asked(work, tmp_path, fp32_stem):
    out = tmp_path / "q.onnx"
    info = quantize_int8(
        work["root"] / "models/export/tiny.onnx", out, work["data"]["train_x"], n=16, fp32_stem=fp32_stem
    )
    proto = onnx.load(str(out))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 9  # resnet8: stem + 3 stages x 2 convs + 2 strided 1x1 shortcuts = 1 + 6 + 2
    assert _conv_weight_is_int8(proto, convs[0]) is not fp32_stem
    assert all(_conv_weight_is_int8(proto, c) for c in convs[1:])
    assert info["fp32_nodes"] == ([convs[0].name] if fp32_stem else [])


def test_predict_cli_on_pngs(work, tmp_path):
    imgs = work["data"]["test_x"][:3, 0].numpy()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(imgs):
        Image.fromarray(a, "L").save(folder / f"g{i}.png")
    # converted to L, 16x16
    Image.fromarray(np.stack([imgs[0]] * 3, -1), "RGB").resize((32, 32)).save(folder / "rgb_big.png")
    (folder / "broken.png").write_bytes(b"not a png")
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    model = str(work["root"] / "models/export/tiny.onnx")
    res = run_cli("predict", model, str(folder), str(note), "--top-k", "2", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [Path(p["file"]).name for p in out["predictions"]] == ["g0.png", "g1.png", "g2.png", "rgb_big.png"]
    assert all(len(p["top"]) == 2 and p["top"][0]["prob"] >= p["top"][1]["prob"] for p in out["predictions"])
    # trained model is right
    assert [p["top"][0]["index"] for p in out["predictions"][:3]] == work["data"]["test_y"][:3].tolist()
    assert sorted(Path(s["file"]).name for s in out["skipped"]) == ["broken.png", "notes.txt"]
    assert "skipped" in res.stderr and "notes.txt" in res.stderr
    table = run_cli("predict", model, str(folder / "g0.png"))
    assert table.exit_code == 0 and "class" in table.stdout and "g0.png" in table.stdout


def test_predict_errors(work, tmp_path):
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(work["root"] / "models/export/tiny.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    model = str(work["root"] / "models/export/tiny.onnx")
    for args, msg in [
        ((str(bare), str(tmp_path)), "no kdpipe metadata"),
        ((model, str(tmp_path / "empty")), "no readable PNG/JPEG image"),
        ((str(tmp_path / "junk.onnx"), str(tmp_path)), "not a valid ONNX model"),
    ]:
        res = run_cli("predict", *args)
        assert res.exit_code == 2 and msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, (
            res.output
        )


def test_parity_failure_names_the_figure_that_failed(work):
    path = work["root"] / "models/export/tiny.onnx"
    wrapped = Normalized(work["model"], work["art"]["mean"], work["art"]["std"])
    sess, _ = make_session(path, threads=1)
    # 1e-12 + 0 x max|z|
    with pytest.raises(KdpipeError, match=r"max \|Δlogit\| .* exceeds the tolerance 1e-12") as e:
        check_parity(wrapped, sess, work["data"]["test_x"][:16], atol=1e-12, rtol=0.0)
    assert "agreement" not in str(e.value)  # agreement was fine: only the failing figure is named
    proto = onnx.load(str(path))  # tamper: flip the sign of the classifier's weights
    init = next(t for t in proto.graph.initializer if len(t.dims) == 2)
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(-w, init.name))
    bad = work["root"] / "tampered.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(
        KdpipeError, match=r"exceeds the tolerance .*; top-1 agreement (?!100\.0000%)\S+ on \d+ decisive"
    ):
        check_parity(
            wrapped, make_session(bad, threads=1)[0], work["data"]["test_x"][:16], atol=1e-4, rtol=0.0
        )


def test_parity_tolerance_is_relative_to_the_logit_scale(work):
    """Logits x 1e4: the absolute error of float32 grows with them; atol + rtol * max|z| follows."""
    scaled = Normalized(_Scaled(work["model"], 1e4), work["art"]["mean"], work["art"]["std"]).eval()
    path = work["root"] / "scaled.onnx"
    export_onnx(_Scaled(work["model"], 1e4), work["art"], "0" * 64, path)
    sess, _ = make_session(path, threads=1)
    rep, _, tz = check_parity(scaled, sess, work["data"]["test_x"][:16], atol=1e-4, rtol=1e-5)
    assert rep["tolerance"] == pytest.approx(1e-4 + 1e-5 * np.abs(tz).max())  # the documented formula
    assert rep["max_abs_logit"] > 1e2  # trained logits of a few units, times 1e4


def test_near_ties_do_not_count_as_disagreement(work):
    """Two classes with equal logits: argmax may differ between runtimes, but the margin 0 < 2 tol."""
    tied = Normalized(_Tied(work["model"]), work["art"]["mean"], work["art"]["std"]).eval()
    path = work["root"] / "tied.onnx"
    export_onnx(_Tied(work["model"]), work["art"], "0" * 64, path)
    rep, _, _ = check_parity(
        tied, make_session(path, threads=1)[0], work["data"]["test_x"][:16], atol=1e-4, rtol=0.0
    )
    # every image is a tie: none is decisive
    assert rep["decisive_images"] == 0 and rep["top1_agreement"] == 1.0


class _Scaled(torch.nn.Module):
    def __init__(self, m: torch.nn.Module, k: float) -> None:
        super().__init__()
        self.m, self.k = m, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x) * self.k


class _Tied(torch.nn.Module):
    """Logits [z0, z0]: a perfect tie on every image."""

    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.m(x)[:, :1]
        return torch.cat([z, z], 1)


def test_export_bad_input_is_one_line(work, tmp_path, monkeypatch):
    monkeypatch.chdir(work["root"])
    Path("models/students/junk.pt").write_bytes(torch.zeros(1).numpy().tobytes())
    checkpoint.save({"a": 1}, "models/students/foreign.pt")
    checkpoint.save(work["art"] | {"arch": "nope"}, "models/students/unknown.pt")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["students"].update(
        {k: params["students"]["tiny"] for k in ("junk", "foreign", "missing", "unknown")}
    )
    Path("p2.yaml").write_text(yaml.safe_dump(params))
    for name, msg in [
        ("missing", "not found"),
        ("junk", "not a readable"),
        ("foreign", "not a kdpipe model artifact"),
        ("unknown", "unknown arch 'nope'"),
        ("nobody", "no student 'nobody'"),
    ]:
        res = run_cli("export", name, "--params", "p2.yaml")
        assert res.exit_code == 2 and msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, (
            res.output
        )
    assert sorted(f.name for f in Path("models/export").iterdir()) == ["tiny.int8.onnx", "tiny.onnx"]


def test_dynamo_failure_falls_back_loudly(work, tmp_path, monkeypatch, caplog):
    real = torch.onnx.export

    def no_dynamo(*a, **kw):
        if kw.get("dynamo"):
            raise RuntimeError("simulated torch.export failure")
        return real(*a, **kw)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    path = tmp_path / "legacy.onnx"
    assert export_onnx(work["model"], work["art"], "0" * 64, path) == "legacy"
    assert "FALLING BACK" in caplog.text and "simulated" in caplog.text
    x = to_unit(work["data"]["test_x"][:7])  # the legacy graph keeps the dynamic batch and the metadata
    z = run_logits(make_session(path, threads=1)[0], x)
    np.testing.assert_allclose(
        z, torch_logits(Normalized(work["model"], work["art"]["mean"], work["art"]["std"]), x), atol=1e-4
    )
    assert read_metadata(path)["arch"] == "resnet8"
    # doc_strings stripped
    assert str(ROOT).encode() not in path.read_bytes() and b"site-packages" not in path.read_bytes()


def test_check_onnx_tool_reproduces_top1_without_kdpipe(work, tmp_path):
    npz = tmp_path / "test.npz"
    np.savez(npz, x=work["data"]["test_x"].numpy(), y=work["data"]["test_y"].numpy())
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\n"
    guard = (
        "import sys, atexit; atexit.register(lambda: print('IMPORTED', sorted(m for m in "
        "('torch', 'pipeline', 'stages') if m in sys.modules)))\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            guard + code,
            str(ROOT / "tools/check_onnx.py"),
            str(work["root"] / "models/export/tiny.onnx"),
            "--npz",
            str(npz),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "IMPORTED []"
    report = json.loads("\n".join(lines[:-1]))
    assert report["top1"] == pytest.approx(work["metrics"]["top1"]["fp32"]) and report["images"] == 64


def test_stage_parity_failure_leaves_no_onnx(work, monkeypatch):
    monkeypatch.chdir(work["root"])
    Path("models/students/tiny2.pt").write_bytes(Path("models/students/tiny.pt").read_bytes())
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["students"]["tiny2"] = params["students"]["tiny"]
    # no export passes: the stage fails after writing temporaries
    params["export"].update(parity_atol=1e-12, parity_rtol=0.0)
    Path("p3.yaml").write_text(yaml.safe_dump(params))
    res = run_cli("export", "tiny2", "--params", "p3.yaml")
    assert res.exit_code == 2 and "max |Δlogit|" in res.stderr and "exceeds the tolerance" in res.stderr, (
        res.output
    )
    # no tiny2*, no .tmp
    assert sorted(f.name for f in Path("models/export").iterdir()) == [
        "tiny.int8.onnx",
        "tiny.onnx",
    ]
    assert not Path("results/export/tiny2").exists()


def test_sessions_spin_unless_told_not_to(work):
    """Spinning is ORT's serving default; `spin=False` is there for hosts that share the cores."""
    path = work["root"] / "models/export/tiny.onnx"
    key = "session.intra_op.allow_spinning"
    assert make_session(path, threads=1)[0].get_session_options().get_session_config_entry(key) == "1"
    assert (
        make_session(path, threads=1, spin=False)[0].get_session_options().get_session_config_entry(key)
        == "0"
    )
    m = json.loads((work["root"] / "results/export/tiny/metrics.json").read_text())
    assert m["env"]["ort_spinning"] is True and m["env"]["steady_allocator"] is True
