"""`kdpipe init-data`: look at a folder of class folders and write a profile that trains on it as is.

Layouts: root/train/<class>/* + root/test/<class>/* (used as they are), or root/<class>/* (prepare-data
then holds out `imagefolder.test_fraction` of each class as the test split, with a fixed seed).
Image sizes and modes come from PIL headers of an evenly spaced sample (no decoding).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.imagefolder import COLOUR, list_images, probe
from pipeline.data.params import ImageFolderParams

SIZES = (32, 48, 64, 96, 128, 160, 192, 224)  # suggested square sides in pixels
SAMPLE = 400  # headers read for sizes and modes


@dataclass
class Scan:
    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]  # part -> class -> images
    short_sides: list[int]  # shorter side in px of the sampled images
    modes: dict[str, int]  # PIL mode -> sampled images
    unreadable: int  # sampled files whose header did not parse
    test_fraction: float

    @property
    def suggested_size(self) -> int:
        """The largest standard side not above the median shorter side (32 at least)."""
        med = statistics.median(self.short_sides) if self.short_sides else 32
        return max([s for s in SIZES if s <= med] or [32])

    @property
    def n_train(self) -> int:
        n = sum(self.counts.get("train", self.counts.get("all", {})).values())
        return n if "train" in self.counts else n - round(self.test_fraction * n)

    def lines(self) -> list[str]:
        """What was found, for the user."""
        layout = (
            "train/ + test/"
            if "train" in self.counts
            else f"one folder (test split: {self.test_fraction:.0%} per class)"
        )
        out = [f"{self.root}: {len(self.classes)} classes, layout {layout}"]
        for c in self.classes:
            out.append(f"  {c}: " + ", ".join(f"{part} {n.get(c, 0)}" for part, n in self.counts.items()))
        if self.short_sides:
            out.append(
                f"sizes (shorter side, {len(self.short_sides)} sampled): min {min(self.short_sides)}, median "
                f"{statistics.median(self.short_sides):g}, max {max(self.short_sides)} px; modes "
                f"{dict(self.modes)}" + (f"; {self.unreadable} unreadable" if self.unreadable else "")
            )
        out.append(f"suggested image_size: {self.suggested_size}")
        return out


def scan_folder(root: str | Path, test_fraction: float = 0.2) -> Scan:
    """Classes, per-class counts and sampled sizes of an ImageFolder (non-strict: empty classes are left
    out)."""
    listing = list_images(ImageFolderParams(root=str(root), test_fraction=test_fraction))
    counts = {part: dict(Counter(listing.classes[c] for _, c in fs)) for part, fs in listing.files.items()}
    files = [f for fs in listing.files.values() for f, _ in fs]
    step = max(1, len(files) // SAMPLE)
    heads = [probe(f) for f in files[::step][:SAMPLE]]
    ok = [h for h in heads if h is not None]
    return Scan(
        Path(root),
        listing.classes,
        counts,
        [min(h[1]) for h in ok],
        dict(Counter(h[0] for h in ok)),
        len(heads) - len(ok),
        test_fraction,
    )


def profile_text(s: Scan, image_size: int = 0) -> str:
    """A minimal profile (base, data, teachers, students, export) for this folder."""
    size = image_size or s.suggested_size
    k, n = len(s.classes), s.n_train
    # validation for model selection; none if tiny
    val = min(5000, max(k, round(0.1 * n))) if n >= 4 * k else 0
    crop = (
        "crop: random_resized, scale: [0.35, 1.0]"
        if size >= 64
        else f"crop: pad_crop, pad: {max(1, size // 8)}"
    )
    teacher = "tv_resnet18" if size > 64 else "resnet20"
    colour = any(m in COLOUR for m in s.modes)
    optim = "{epochs: 30, batch_size: 128, lr: 0.1}"
    held = f", test_fraction: {s.test_fraction}" if "all" in s.counts else ""
    rows = [
        ("base: {seed: 0, device: auto}", ""),
        ("data:", ""),
        ("  source: imagefolder", ""),
        (f"  image_size: {size}", f"square side in px (init-data suggested {s.suggested_size})"),
        ("  resize: shorter_center", "shorter side to image_size, then the centre square (plain: stretch)"),
        (f"  val_size: {val}", "held out of the training images, class-balanced, for model selection"),
        (f"  augment: {{{crop}, flip: true}}", "on the device, per seed and epoch"),
        (f"  imagefolder: {{root: {str(s.root)!r}, strict: false{held}}}", "strict: true refuses odd images"),
        ("teachers:", ""),
        (f"  teacher: {{arch: {teacher}, optim: {optim}}}", ""),
        ("students:", ""),
        (f"  student: {{arch: resnet8, method: kd, teachers: [teacher], optim: {optim}}}", ""),
        ("export: {students: [student]}", ""),
    ]
    head = (
        f"# Own-data profile written by `kdpipe init-data {s.root}`: {k} classes, {n} training images\n"
        f"# ({'RGB' if colour else 'grey'}, resized to {size} px).\n"
        "# Use it: cp <this file> params.yaml && kdpipe dvc-yaml && dvc repro\n"
    )
    return head + "".join(f"{t.ljust(44)}  # {c}\n" if c else f"{t}\n" for t, c in rows)
