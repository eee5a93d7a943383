"""The imagefolder source: root/{train,test}/<class>/<image> or root/<class>/<image> (test held out).

Headers are probed with PIL (mode and size, no decoding); images are decoded once with
torchvision.io into a uint8 buffer at `image_size`. Mode: RGB if any image is colour (grey ones
are replicated), else grey. Unreadable, truncated, 16-bit, CMYK and alpha images, empty class
folders and test classes missing from train/ are skipped or converted (counted, one warning
line), or with `strict: true` refused with one line naming the file.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.data.augment import resize, to_uint8
from pipeline.data.params import DataParams, ImageFolderParams
from pipeline.data.registry import Alloc, Part, Raw, register_source
from pipeline.data.split import balanced_subset, complement
from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".webp")  # what torchvision.io decodes
COLOUR = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
CONVERSIONS = {
    "unreadable": "unreadable (skipped)",
    "grey_to_rgb": "grey -> RGB",
    "alpha_dropped": "alpha dropped",
    "cmyk_to_rgb": "CMYK -> RGB",
    "bit16_to_8": "16-bit -> 8-bit",
    "colour_to_grey": "colour -> grey",
    "empty_classes": "empty class folders dropped",
    "test_only_images": "test images of classes not in train/ skipped",
}
CHUNK = 256  # images decoded per batch of thread jobs (bounded memory)
STRICT_FIX = "convert it to 8-bit RGB or grey, or set data.imagefolder.strict: false to convert it on the fly"


@dataclass
class Listing:
    """Every image file found, by part ("train", "test" or "all"), as (path, class index)."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]
    notes: dict[str, int] = field(default_factory=dict)
    ignored: int = 0  # files without an image extension


def layout(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise KdpipeError(
            f"data.imagefolder.root: {root} is not a folder; point it at a folder of class folders"
        )
    has = [(root / s).is_dir() for s in ("train", "test")]
    if any(has) and not all(has):
        raise KdpipeError(
            f"{root} has {'train' if has[0] else 'test'}/ but not {'test' if has[0] else 'train'}/; "
            "add it, or put the class folders directly under the root (a test split is then held out)"
        )
    return {"train": root / "train", "test": root / "test"} if all(has) else {"all": root}


def class_folders(folder: Path) -> tuple[dict[str, list[Path]], int]:
    """Class name -> sorted image files; and the number of non-image files ignored."""
    out, ignored = {}, 0
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        out[d.name] = [f for f in files if f.suffix.lower() in IMAGE_EXTS]
        ignored += len(files) - len(out[d.name])
    if not out:
        raise KdpipeError(
            f"{folder}: no class folders; put each class's images in its own folder "
            f"({folder}/<class>/<image>)"
        )
    return out, ignored


def list_images(p: ImageFolderParams) -> Listing:
    """Find classes and images; empty classes and test-only classes are dropped (or refused if strict)."""
    root = Path(p.root)
    parts = layout(root)
    found = {k: class_folders(v) for k, v in parts.items()}
    first = "train" if "train" in found else "all"
    notes, classes = {}, []
    for c, files in found[first][0].items():
        if files:
            classes.append(c)
        elif p.strict:
            raise KdpipeError(
                f"{parts[first] / c}: empty class folder; add images or remove it "
                "(or set data.imagefolder.strict: false to drop it)"
            )
        else:
            notes["empty_classes"] = notes.get("empty_classes", 0) + 1
    index = {c: i for i, c in enumerate(classes)}
    files = {}
    for part, (by_class, _) in found.items():
        files[part] = []
        for c, fs in by_class.items():
            if c in index:
                files[part] += [(f, index[c]) for f in fs]
            elif part == "test" and fs:
                if p.strict:
                    raise KdpipeError(
                        f"{parts['test'] / c}: class missing from (or empty in) train/; add its training "
                        "images or remove it (or set data.imagefolder.strict: false to skip it)"
                    )
                notes["test_only_images"] = notes.get("test_only_images", 0) + len(fs)
    if not files[first]:
        raise KdpipeError(
            f"{parts[first]}: zero images ({', '.join(IMAGE_EXTS)}) in its class folders; add images"
        )
    return Listing(root, classes, files, notes, sum(ign for _, ign in found.values()))


def probe(path: Path) -> tuple[str, tuple[int, int]] | None:
    """PIL mode and (width, height) from the header, or None when the file is not a readable image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception:  # noqa: BLE001 - any failure to parse the header means an unreadable file
        return None


def decode(path: Path, rgb: bool) -> torch.Tensor:
    """(C, H, W) uint8, C = 3 or 1; raises RuntimeError on a corrupt or truncated file."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    x = decode_image(read_file(str(path)), mode=ImageReadMode.RGB if rgb else ImageReadMode.GRAY)
    return x[0] if x.ndim == 4 else x  # animated GIF: first frame


def _decode_resized(path: Path, rgb: bool, size: int, policy: str) -> tuple[bool, torch.Tensor] | str:
    """(was 16-bit, (C, size, size) uint8), or the decoder's message for an unreadable file."""
    try:
        x = decode(path, rgb)
    except RuntimeError as e:
        return str(e).splitlines()[0][-60:]
    return x.dtype != torch.uint8, resize(to_uint8(x)[None], size, policy)[0]


def _decoded(pool: ThreadPoolExecutor, entries: list, rgb: bool, size: int, policy: str) -> Iterator:
    """Decoded images in entry order, CHUNK jobs at a time on `pool` (torchvision and torch release the
    GIL)."""
    for s in range(0, len(entries), CHUNK):
        jobs = [
            pool.submit(_decode_resized, f, rgb, size, policy) if head else None
            for _, f, _, head in entries[s : s + CHUNK]
        ]
        yield from (j.result() if j else None for j in jobs)


def _conversion(mode: str, rgb: bool, forced: bool) -> str | None:
    if mode.startswith("I;16") or mode in ("I", "F"):
        return "bit16_to_8"
    if mode in ALPHA:
        return "alpha_dropped"
    if mode == "CMYK" and rgb:
        return "cmyk_to_rgb"
    if rgb and mode not in COLOUR:
        return "grey_to_rgb"
    if not rgb and mode in COLOUR:
        return None if forced else "colour_to_grey"
    return None


def _refuse_or_count(notes: dict, what: str, path: Path, strict: bool, detail: str = "") -> None:
    if strict:
        if what == "unreadable":
            raise KdpipeError(
                f"{path}: unreadable or truncated image{detail}; replace or delete it "
                "(or set data.imagefolder.strict: false to skip it)"
            )
        raise KdpipeError(f"{path}: {CONVERSIONS[what]} needed; {STRICT_FIX}")
    notes[what] = notes.get(what, 0) + 1


def load(p: DataParams, seed: int, alloc: Alloc) -> Raw:
    """Decode every image once at `image_size` (default 32) into `alloc`'s buffer."""
    q, size = p.imagefolder, p.image_size or 32
    listing = list_images(q)
    notes = dict(listing.notes)
    entries = [(part, f, c, probe(f)) for part, fs in listing.files.items() for f, c in fs]
    readable = [h[0] for *_, h in entries if h is not None]
    rgb = q.mode == "rgb" or (q.mode == "auto" and any(m in COLOUR for m in readable))
    buf = alloc((len(entries), 3 if rgb else 1, size, size))
    rows: dict[str, list[int]] = {k: [] for k in listing.files}
    labels: list[int] = []
    t0 = time.perf_counter()
    # torchvision 0.29 deprecates its decoders in favour of torchcodec (not a dependency here); the filter is
    # process-wide while this block runs, so it covers the pool's threads too
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, p.workers)) as pool:
        warnings.filterwarnings(
            "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning
        )
        for (part, f, c, head), got in zip(entries, _decoded(pool, entries, rgb, size, p.resize)):
            if head is None or isinstance(got, str):
                _refuse_or_count(
                    notes, "unreadable", f, q.strict, f" ({got})" if isinstance(got, str) else ""
                )
                continue
            # 16-bit RGB: PIL says RGB
            conv = "bit16_to_8" if got[0] else _conversion(head[0], rgb, forced=q.mode == "grey")
            if conv:
                _refuse_or_count(notes, conv, f, q.strict)
            rows[part].append(len(labels))
            buf[len(labels)] = got[1]
            labels.append(c)
    log.info("decoded %d images at %d px in %.1f s", len(labels), size, time.perf_counter() - t0)
    if not labels:
        raise KdpipeError(f"{listing.root}: none of the {len(entries)} images could be read; check the files")
    if listing.ignored:
        notes["ignored_files"] = listing.ignored
    _warn(listing.root, notes, rgb)
    y = torch.tensor(labels, dtype=torch.int64)
    if "all" in rows:  # one folder: hold out the test split with a fixed seed, the same for every base.seed
        r = torch.tensor(rows["all"], dtype=torch.int64)
        te = balanced_subset(y[r], round(q.test_fraction * len(r)), torch.Generator().manual_seed(0))
        tr = complement(len(r), te)
        return Raw(
            Part(buf, y[r[tr]], r[tr]), Part(buf, y[r[te]], r[te]), listing.classes, notes, resized=True
        )
    tr, te = (torch.tensor(rows[k], dtype=torch.int64) for k in ("train", "test"))
    return Raw(Part(buf, y[tr], tr), Part(buf, y[te], te), listing.classes, notes, resized=True)


def _warn(root: Path, notes: dict[str, int], rgb: bool) -> None:
    said = [f"{n} {CONVERSIONS.get(k, k.replace('_', ' '))}" for k, n in notes.items() if n]
    if said:
        log.warning(
            "ImageFolder %s (%s): %s; set data.imagefolder.strict: true to refuse such files instead",
            root,
            "RGB" if rgb else "grey",
            ", ".join(said),
        )


def sizes(p: DataParams) -> tuple[int, int]:
    """(train, test) image files found (unreadable ones are only found, and skipped, when decoding)."""
    listing = list_images(p.imagefolder)
    if "all" in listing.files:
        n = len(listing.files["all"])
        return n - round(p.imagefolder.test_fraction * n), round(p.imagefolder.test_fraction * n)
    return len(listing.files["train"]), len(listing.files["test"])


register_source("imagefolder", flip=True, raw_paths=lambda p: [p.imagefolder.root], sizes=sizes)(load)
