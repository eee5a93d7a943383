"""ImageFolder source: mixed files decoded once at a size, bad images skipped/converted or refused
(strict)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.data.build import prepare, prepare_to, size_problems, summary
from pipeline.data.params import DataParams, ImageFolderParams
from pipeline.data.scan import scan_folder
from pipeline.data.sources import raw_paths
from pipeline.errors import KdpipeError

COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 80, 230)}


def shape(cls: str, w: int, h: int, i: int) -> Image.Image:
    """A class-coloured shape on a dark background; position varies with i."""
    im = Image.new("RGB", (w, h), (10 + 5 * i, 10, 10))
    d, box = ImageDraw.Draw(im), (w // 5 + i, h // 5, w - w // 5, h - h // 5)
    {"circle": d.ellipse, "square": d.rectangle}.get(
        cls, lambda b, fill: d.polygon([(b[0], b[3]), (b[2], b[3]), ((b[0] + b[2]) // 2, b[1])], fill=fill)
    )(box, fill=COLOURS[cls])
    return im


def make_folder(root, per_class=(4, 2)):
    """root/{train,test}/<class>/: PNG and JPEG of mixed sizes (24..60 px), per_class = (train, test)
    images."""
    for part, n in zip(("train", "test"), per_class):
        for c in COLOURS:
            (root / part / c).mkdir(parents=True)
            for i in range(n):
                shape(c, 24 + 9 * i, 30 + 6 * i, i).save(root / part / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def add_odd(root, kind: str):
    """One odd file in train/circle; returns its path."""
    d, base = root / "train" / "circle", shape("circle", 40, 40, 1)
    path = d / {"corrupt": "bad.png", "truncated": "cut.jpg", "cmyk": "cmyk.jpg"}.get(kind, f"{kind}.png")
    if kind == "corrupt":
        path.write_bytes(b"this is not an image")
    elif kind == "truncated":
        base.save(path, "JPEG")
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "grey":
        base.convert("L").save(path)
    elif kind == "rgba":
        base.convert("RGBA").save(path)
    elif kind == "cmyk":
        base.convert("CMYK").save(path, "JPEG")
    elif kind == "16bit":
        Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(path)
    return path


def params(root, **kw) -> DataParams:
    folder = ImageFolderParams(root=str(root), strict=kw.pop("strict", False))
    return DataParams(
        **{"source": "imagefolder", "image_size": 32, "val_size": 3, "imagefolder": folder, **kw}
    )


def test_mixed_folder_is_prepared_with_counts_and_one_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs")
    for kind in ("corrupt", "truncated", "grey", "rgba", "cmyk", "16bit"):
        add_odd(root, kind)
    (root / "train" / "circle" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        d = prepare(params(root), seed=0)
    s = summary(d)
    # 3 classes x 4 train + 6 odd - 2 unreadable = 16 train images, 3 of them held out: 13 train, 3 val; 3 x 2
    # = 6 test
    assert (s["train"], s["val"], s["test"], s["classes"], s["channels"], s["size"]) == (13, 3, 6, 3, 3, 32)
    assert (
        s["unreadable"],
        s["grey_to_rgb"],
        s["alpha_dropped"],
        s["cmyk_to_rgb"],
        s["bit16_to_8"],
        s["ignored_files"],
    ) == (2, 1, 1, 1, 1, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 unreadable" in warnings[0].getMessage()
    assert d["class_names"] == ["circle", "square", "triangle"]
    assert raw_paths(params(root)) == [str(root)]


def test_colours_survive_decoding_and_resize(tmp_path):
    root = make_folder(tmp_path / "imgs")
    d = prepare(params(root, val_size=0), seed=0)
    x, y = d["train_x"].float(), d["train_y"]
    # centre pixel of each image is its class colour (shapes cover the centre); JPEG loses a few levels
    for k, c in enumerate(COLOURS.values()):
        centre = x[y == k][:, :, 16, 16]
        assert (centre - x.new_tensor(c)).abs().max() < 40


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "grey", "rgba", "cmyk", "16bit"])
def test_strict_refuses_the_odd_file_by_name(tmp_path, kind):
    root = make_folder(tmp_path / "imgs")
    bad = add_odd(root, kind)
    with pytest.raises(KdpipeError, match=bad.name) as e:
        prepare(params(root, strict=True), seed=0)
    assert "\n" not in str(e.value) and "strict: false" in str(e.value)


def test_grey_folder_stays_grey(tmp_path):
    root = make_folder(tmp_path / "imgs")
    for f in root.rglob("*.*"):
        Image.open(f).convert("L").save(f.with_suffix(".png"))
        if f.suffix != ".png":
            f.unlink()
    assert summary(prepare(params(root), seed=0))["channels"] == 1


def test_folder_structure_problems(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "train" / "empty").mkdir()
    (root / "test" / "stray").mkdir()
    shape("circle", 30, 30, 0).save(root / "test" / "stray" / "0.png")
    s = summary(prepare(params(root), seed=0))
    assert (s["classes"], s["empty_classes"], s["test_only_images"], s["test"]) == (3, 1, 1, 6)
    with pytest.raises(KdpipeError, match="empty class folder"):
        prepare(params(root, strict=True), seed=0)
    (root / "train" / "empty").rmdir()
    with pytest.raises(KdpipeError, match="stray: class missing"):
        prepare(params(root, strict=True), seed=0)
    with pytest.raises(KdpipeError, match="val_size=99"):
        prepare(params(root, val_size=99), seed=0)
    with pytest.raises(KdpipeError, match="test_subset=7 but the split has 6"):
        prepare(params(root, test_subset=7), seed=0)
    for sub in ("none", "zero/a", "half/train"):
        (tmp_path / sub).mkdir(parents=True)
    with pytest.raises(KdpipeError, match="no class folders"):
        prepare(params(tmp_path / "none"), seed=0)
    with pytest.raises(KdpipeError, match="zero images"):
        prepare(params(tmp_path / "zero"), seed=0)
    with pytest.raises(KdpipeError, match="has train/ but not test/"):
        prepare(params(tmp_path / "half"), seed=0)


def test_single_folder_holds_out_a_fixed_test_split(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=(10, 0))
    flat = tmp_path / "flat"
    (root / "train").rename(flat)
    a, b = prepare(params(flat, val_size=3), seed=0), prepare(params(flat, val_size=3), seed=1)
    # 30 images, 20% = 6 test (2 per class), 24 left: 3 val + 21 train
    assert (len(a["train_y"]), len(a["val_y"]), len(a["test_y"])) == (21, 3, 6)
    assert a["test_y"].bincount().tolist() == [2, 2, 2]
    # test fixed, validation by seed
    assert (a["test_x"] == b["test_x"]).all() and not (a["val_x"] == b["val_x"]).all()


def test_failed_prepare_leaves_nothing_and_keeps_old_data(tmp_path):
    root = make_folder(tmp_path / "imgs")
    out = tmp_path / "data" / "prepared"
    with pytest.raises(KdpipeError):
        prepare_to(params(root, val_size=99), 0, out)
    assert not (tmp_path / "data").exists()
    prepare_to(params(root), 0, out)
    before = sorted(p.name for p in out.iterdir())
    add_odd(root, "corrupt")
    with pytest.raises(KdpipeError, match="bad.png"):
        prepare_to(params(root, strict=True), 0, out)
    assert sorted(p.name for p in out.iterdir()) == before and [p.name for p in out.parent.iterdir()] == [
        "prepared"
    ]


def test_scan_reports_classes_counts_and_a_size(tmp_path):
    s = scan_folder(make_folder(tmp_path / "imgs"))
    assert s.classes == ["circle", "square", "triangle"] and s.counts["train"] == {
        "circle": 4,
        "square": 4,
        "triangle": 4,
    }
    # shorter sides min(24 + 9i, 30 + 6i) = 24, 33, 42, 48 (train, i = 0..3) and 24, 33 (test), x 3 classes:
    # 18 values, the 9th and 10th are both 33 -> median 33 -> the largest standard side <= 33 is 32
    assert s.suggested_size == 32 and s.n_train == 12


def test_init_data_writes_a_profile_that_loads_and_prepares(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import stages.init_data  # noqa: F401 - registers the command
    from pipeline.checks import load_params
    from stages import app

    root = make_folder(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["init-data", str(root), "--out", "own.yaml"])
    assert res.exit_code == 0, res.output
    assert "circle: train 4, test 2" in res.output and "suggested image_size: 32" in res.output
    p = load_params(tmp_path / "own.yaml")
    assert (p.data.source, p.data.imagefolder.root, p.data.image_size) == ("imagefolder", str(root), 32)
    assert (
        list(p.teachers) == ["teacher"]
        and p.students["student"].teachers == ["teacher"]
        and p.export.students == ["student"]
    )
    # 12 training images, 3 classes: 12 < 4 x 3 is false -> val = max(3, round(1.2)) = 3
    assert p.data.val_size == 3
    assert summary(prepare(p.data, 0))["train"] == 9


def test_subset_sizes_are_checked_without_decoding(tmp_path):
    root = make_folder(tmp_path / "imgs")  # 3 classes x (4 train, 2 test): 12 train, 6 test images
    assert size_problems(params(root)) == []
    # 12 train - 3 validation = 9 left for train_subset; 6 test images; val_size must stay < 12
    assert size_problems(params(root, train_subset=10, test_subset=7)) == [
        "data.test_subset=7 but the split has 6 images; set it <= 6 (0 = all)",
        "data.train_subset=10 but the split has 9 images; set it <= 9 (0 = all)",
    ]
    assert size_problems(params(root, val_size=12)) == [
        "data.val_size=12 must be < 12 training images; lower it"
    ]
    # a model's own train_subset: at most the 9 left (or data.train_subset when that is set)
    own = {"students.s.train_subset": 10}
    assert size_problems(params(root), own) == [
        "students.s.train_subset=10 but the split has 9 images; set it <= 9 (0 = all)"
    ]
    assert size_problems(params(root), {"students.s.train_subset": 9}) == []
    (root / "train" / "circle" / "0.jpg").write_bytes(b"not an image")  # counted: only decoding finds it
    assert size_problems(params(root, train_subset=9)) == []
    (tmp_path / "empty").mkdir()
    assert "no class folders" in size_problems(params(tmp_path / "empty"))[0]
