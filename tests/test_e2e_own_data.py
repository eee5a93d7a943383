"""End to end on a user's own images: an ImageFolder made by the test, a resnet50 teacher started from a
torchvision state dict on disk, a mobilenet_v3_small student distilled with KD and AT, exported to ONNX
and INT8, all through `kdpipe init-data`, `kdpipe dvc-yaml` and a real `dvc repro`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_e2e import BIN, commit_project, copy_project, run

SIZE = 64


def shapes(root: Path, n: int = 24) -> None:
    """Three classes of coloured shapes (square, disc, bar) in PNG and JPEG, mixed sizes, one grey, one
    corrupt."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n // 3)):
        for c, cls in enumerate(("square", "disc", "bar")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                side = int(rng.integers(48, 96))
                img = np.full((side, side, 3), rng.integers(0, 60, 3), np.uint8)
                yy, xx = np.mgrid[:side, :side] / side
                mask = [
                    (abs(yy - 0.5) < 0.3) & (abs(xx - 0.5) < 0.3),
                    (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.09,
                    abs(yy - 0.5) < 0.1,
                ][c]
                img[mask] = rng.integers(150, 255, 3)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(img).save(d / f"{i}.{ext}")
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(root / "train" / "disc" / "grey.png")
    (root / "train" / "bar" / "broken.png").write_bytes(b"\x89PNG not really")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    dst = copy_project(tmp_path_factory.mktemp("own"))
    shapes(dst / "images")
    import torchvision

    torch.save(torchvision.models.resnet50(num_classes=1000).state_dict(), dst / "resnet50.pth")
    run(
        [
            sys.executable,
            "-m",
            "stages",
            "init-data",
            "images",
            "--out",
            "own.yaml",
            "--image-size",
            str(SIZE),
        ],
        dst,
    )
    profile = yaml.safe_load((dst / "own.yaml").read_text())
    tiny = {"epochs": 1, "batch_size": 32, "lr": 0.01}
    profile["teachers"] = {"r50": {"arch": "resnet50", "init": {"path": "resnet50.pth"}, "optim": tiny}}
    profile["students"] = {
        "kd": {"arch": "mobilenet_v3_small", "method": "kd", "teachers": ["r50"], "optim": tiny},
        "at": {
            "arch": "mobilenet_v3_small",
            "method": "at",
            "teachers": ["r50"],
            "at": {"beta": 100.0},
            "optim": tiny,
        },
    }
    profile["data"]["val_size"] = 9
    profile["export"] = {"students": ["kd"], "calib_images": 16, "latency_runs": 2, "latency_warmup": 1}
    (dst / "params.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return commit_project(dst)


@pytest.mark.e2e
def test_own_images_pretrained_teacher_to_int8(project):
    run([str(BIN / "dvc"), "repro"], project)
    meta = json.loads((project / "results" / "prepare-data" / "metrics.json").read_text())
    assert meta["size"] == SIZE and meta["channels"] == 3 and meta["classes"] == 3
    assert "resnet50.pth" in (project / "dvc.lock").read_text()  # the weights file is a recorded dependency
    art = torch.load(project / "models" / "teachers" / "r50.pt", weights_only=True)
    start = torch.load(project / "resnet50.pth", weights_only=True)
    assert art["arch"] == "resnet50" and art["state_dict"]["net.fc.weight"].shape == (3, 2048)
    assert start["conv1.weight"].shape == art["state_dict"]["net.conv1.weight"].shape
    export = json.loads((project / "results" / "export" / "kd" / "metrics.json").read_text())
    assert 0 <= export["top1"]["int8"] <= 1 and (project / "models" / "export" / "kd.int8.onnx").is_file()
    for name in ("kd", "at"):
        assert (project / "models" / "students" / f"{name}.pt").is_file()


@pytest.mark.e2e
def test_adding_an_image_reruns_prepare_data(project):
    src = project / "images" / "train" / "disc" / "1.png"
    shutil.copy2(src, src.with_name("new.png"))
    status = run([str(BIN / "dvc"), "status"], project).stdout
    assert "prepare-data" in status
