"""Start a model from weights on disk: torchvision state dicts, kdpipe artifacts, new heads, refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from pipeline import checkpoint
from pipeline.config import from_dict
from pipeline.errors import KdpipeError
from pipeline.models import create_model
from pipeline.models.init import InitParams, apply_init, head_parameters


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory) -> tuple[Path, dict]:
    """A real torchvision resnet18 (1000 classes, random weights) saved the way users save one."""
    import torchvision

    torch.manual_seed(1)
    sd = torchvision.models.resnet18(num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(sd, path)
    return path, sd


def test_torchvision_state_dict_loads_with_new_head(tv_resnet18, caplog) -> None:
    path, sd = tv_resnet18
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3)
    fresh_fc = model.net.fc.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="pipeline.models.init"):
        report = apply_init(model, InitParams(path=str(path)), "resnet18")
    ours = model.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(ours["net." + k], v, rtol=0, atol=0)
    # the 3-class head keeps its init
    torch.testing.assert_close(model.net.fc.weight, fresh_fc, rtol=0, atol=0)
    assert report["replaced_head"] == ["net.fc.bias", "net.fc.weight"]
    # every tensor of the file but fc.weight and fc.bias is loaded
    assert report["loaded"] == len(sd) - 2 and not report["missing"] and not report["unexpected"]
    assert sum("head layer net.fc replaced" in r.getMessage() for r in caplog.records) == 1
    assert head_parameters(model) == ["net.fc.weight", "net.fc.bias"]


def test_alias_and_checkpoint_wrappers(tv_resnet18, tmp_path) -> None:
    _, sd = tv_resnet18
    wrapped = tmp_path / "ckpt.pth"
    # DDP-style checkpoint
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, wrapped)
    model = create_model("tv_resnet18", num_classes=1000)
    report = apply_init(model, InitParams(path=str(wrapped), head="keep"), "tv_resnet18")
    assert report["loaded"] == len(sd) and not report["replaced_head"]
    torch.testing.assert_close(model.net.fc.weight, sd["fc.weight"], rtol=0, atol=0)


def test_kdpipe_artifact_and_replace_head(tmp_path) -> None:
    src = create_model("resnet8", 4, 1)
    art = checkpoint.make_artifact(
        src,
        arch="resnet8",
        arch_kwargs={},
        num_classes=4,
        in_channels=1,
        input_size=16,
        mean=[0.5],
        std=[0.25],
        class_names=list("abcd"),
        params={},
        kind="teacher",
        name="t",
        metrics={},
    )
    path = tmp_path / "t.pt"
    checkpoint.save(art, path)
    dst = create_model("resnet8", 4, 1)
    fresh_fc = dst.fc.weight.detach().clone()
    report = apply_init(dst, InitParams(path=str(path), head="replace"), "resnet8")
    torch.testing.assert_close(dst.stages[0][0].conv1.weight, src.stages[0][0].conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(dst.fc.weight, fresh_fc, rtol=0, atol=0)
    assert report["replaced_head"] == ["fc.bias", "fc.weight"]
    with pytest.raises(KdpipeError, match=r"t\.pt: a kdpipe artifact of arch 'resnet8', not 'resnet14'"):
        apply_init(create_model("resnet14", 4, 1), InitParams(path=str(path)), "resnet14")


def test_non_strict_loads_what_matches(tv_resnet18) -> None:
    path, sd = tv_resnet18
    model = create_model("resnet18", num_classes=1000, cifar_stem=True)  # a 3x3 stem conv, the file's is 7x7
    with pytest.raises(
        KdpipeError, match=r"resnet18\.pth: weights of another architecture.*net\.conv1\.weight"
    ):
        apply_init(model, InitParams(path=str(path)), "resnet18")
    report = apply_init(model, InitParams(path=str(path), strict=False), "resnet18")
    assert report["mismatched"] == ["net.conv1.weight"] and report["loaded"] == len(sd) - 1


def test_rgb_stem_adapts_to_other_channel_counts(tv_resnet18) -> None:
    path, sd = tv_resnet18
    w = sd["conv1.weight"]  # (64, 3, 7, 7)
    gray = create_model("resnet18", num_classes=1000, in_channels=1)
    assert apply_init(gray, InitParams(path=str(path)), "resnet18")["adapted_stem"] == "net.conv1.weight"
    # gray x as (x, x, x): same response
    torch.testing.assert_close(gray.net.conv1.weight, w.sum(1, keepdim=True))
    five = create_model("resnet18", num_classes=1000, in_channels=5)
    apply_init(five, InitParams(path=str(path)), "resnet18")
    # channels cycle R, G, B, R, G, each scaled by 3/5 so the summed response keeps its scale
    torch.testing.assert_close(five.net.conv1.weight, torch.cat([w, w[:, :2]], 1) * 0.6)


def _save(path: Path, obj) -> str:
    torch.save(obj, path)
    return str(path)


class _Code:
    def __reduce__(self):
        return (print, ("never runs",))


def test_every_refusal_is_one_line(tv_resnet18, tmp_path) -> None:
    good, _ = tv_resnet18
    model = create_model("resnet18", num_classes=3)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    cases = {
        str(tmp_path / "absent.pth"): "not found",
        str(truncated): "truncated or corrupt",
        _save(tmp_path / "code.pth", {"w": _Code()}): "pickled code",
        _save(tmp_path / "list.pth", [torch.zeros(2)]): "not a state dict",
        _save(
            tmp_path / "other.pth", create_model("mobilenet_v3_small", 3).state_dict()
        ): "another architecture",
    }
    for path, reason in cases.items():
        with pytest.raises(KdpipeError, match=reason) as e:
            apply_init(model, InitParams(path=path), "resnet18")
        assert "\n" not in str(e.value) and Path(path).name in str(e.value)


def test_params_block_bounds() -> None:
    p = from_dict(InitParams, {"path": "w.pth", "freeze_epochs": 2}, "student.init")
    assert (p.strict, p.head, p.freeze_epochs) == (True, "auto", 2)
    with pytest.raises(KdpipeError, match="student.init.freeze_epochs: must be >= 0"):
        from_dict(InitParams, {"path": "w.pth", "freeze_epochs": -1}, "student.init")
    with pytest.raises(KdpipeError, match="student.init.path: required"):
        from_dict(InitParams, {}, "student.init")
