"""The `select` params section and the candidate space of the select-student stage.

A candidate is one (arch, width_mult, input_size, arch_kwargs) point. The space is either listed in
params (`select.candidates`) or, by default, every deployable family of the model registry at the
data's image size (every model of a profile trains at the prepared data's size).
Parameter and MAC counts come from `pipeline.models.describe` when the registry has it, else from a
fixed-seed model counted here (MACs = FLOPs / 2 from torch's FlopCounterMode at batch 1).
torch and the registry are imported inside functions, so `pipeline.params` can import the params
dataclasses without loading torch.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.config import bounded
from pipeline.errors import KdpipeError

if TYPE_CHECKING:
    import torch.nn as nn

log = logging.getLogger(__name__)

# Used while the registry has no `model_info`: today's archs that export and quantize cleanly.
FALLBACK_DEPLOYABLE = ("resnet8", "resnet14", "resnet20", "resnet8x4", "wrn_16_1", "vgg8", "tv_resnet18")
DEFAULT_WIDTHS = (0.5, 0.75, 1.0)  # widths tried for a family whose constructor takes `width_mult`
# input sides tried, as fractions of the data's side: students train at the data's size
DEFAULT_SCALES = (1.0,)
MIN_SIZE = 16  # pixels: smaller inputs leave the deeper nets' last stage with nothing to pool


@dataclass(frozen=True)
class SpaceParams:
    """One family of candidates: every width x every input size, with the same extra kwargs."""

    arch: str  # registry name, see `pipeline.models.list_models()`
    width_mults: list[float] = bounded([], gt=0)  # as arch_kwargs.width_mult; [] = the family's own width
    input_sizes: list[int] = bounded([], ge=0)  # input sides in pixels; [] or 0 = the data's side
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the architecture


@dataclass(frozen=True)
class SelectParams:
    """Deployment budget and candidate space of select-student; a limit of 0 means no limit."""

    latency_ms: float = bounded(0.0, ge=0)  # max latency per batch, in ms (the `latency_stat` percentile)
    latency_stat: Literal["p50", "p90"] = "p50"  # which percentile the latency budget applies to
    batch_size: int = bounded(1, ge=1)  # images per call when timing
    threads: int = bounded(1, ge=0)  # ORT intra-op threads when timing (0 = all cores)
    max_mb: float = bounded(0.0, ge=0)  # max deployed .onnx file size in MB (10^6 bytes)
    max_params: int = bounded(0, ge=0)  # max parameters
    max_macs: float = bounded(0.0, ge=0)  # max multiply-accumulates per image (a float, so 3.0e+8 works)
    precision: Literal["int8", "fp32"] = "int8"  # the deployed model: INT8 QDQ (export's recipe) or fp32 ONNX
    # legacy: the TorchScript exporter (~0.2 s a model); dynamo: pipeline.export.export_onnx, as the export
    # stage ships (5-15 s a model on 2 busy cores); their INT8 graphs timed the same within noise
    exporter: Literal["dynamo", "legacy"] = "legacy"
    candidates: list[SpaceParams] = field(default_factory=list)  # [] = the registry's deployable families
    proxy: Literal["macs", "params"] = "macs"  # accuracy proxy: the largest fitting candidate by it wins
    runs: int = bounded(30, ge=1)  # timed calls per candidate
    warmup: int = bounded(5, ge=0)  # untimed calls per candidate before timing
    calib_images: int = bounded(16, ge=1)  # random images that calibrate BN statistics and INT8 ranges
    seed: int = bounded(0, ge=0)  # initialisation and random-image seed

    def budget(self) -> dict:
        """The limits that are set (non-zero), for artifacts and messages."""
        keys = ("latency_ms", "max_mb", "max_params", "max_macs")
        out = {k: getattr(self, k) for k in keys if getattr(self, k)}
        if self.latency_ms:
            out |= {"latency_stat": self.latency_stat, "batch_size": self.batch_size, "threads": self.threads}
        return out


@dataclass(frozen=True)
class Candidate:
    arch: str
    input_size: int  # pixels
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. `mobilenet_v2 w0.75 @24`."""
        kw = dict(self.arch_kwargs)
        w = kw.pop("width_mult", None)
        extra = ",".join(f"{k}={v}" for k, v in sorted(kw.items()))
        width = f" w{w:g}" if w is not None else ""
        return f"{self.arch}{width}{f' [{extra}]' if extra else ''} @{self.input_size}"

    def key(self) -> dict:
        kwargs = json.loads(json.dumps(self.arch_kwargs, sort_keys=True))  # JSON-plain, as cached
        return {"arch": self.arch, "input_size": self.input_size, "arch_kwargs": kwargs}


def model_info(arch: str) -> dict:
    """The registry's `model_info(arch)` when it exists; else a fallback from today's known archs."""
    from pipeline import models

    fn = getattr(models, "model_info", None)
    if fn is not None:
        return dict(fn(arch))
    return {"family": arch, "default_input_size": 32, "deployable": arch in FALLBACK_DEPLOYABLE}


def _takes_width(arch: str) -> bool:
    from pipeline import models

    entry = getattr(models, "_REGISTRY", {}).get(arch)
    fn = getattr(entry, "build", entry)  # a registry of metadata records holds the constructor in `build`
    try:
        return fn is not None and "width_mult" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _sizes(sizes: list[int], data_size: int) -> list[int]:
    return sorted({s or data_size for s in sizes} or {data_size}, reverse=True)


def default_space(data_size: int) -> list[SpaceParams]:
    """Every deployable registry family at the data's side and 3/4 of it; widths 0.5/0.75/1 if it has any."""
    from pipeline import models

    sizes = {max(MIN_SIZE, min(data_size, round(data_size * f / 4) * 4)) for f in DEFAULT_SCALES}
    sizes = sorted(sizes, reverse=True)
    out = []
    try:
        archs = models.list_models(aliases=False)  # one entry per network, not its older names too
    except TypeError:
        archs = models.list_models()
    for arch in archs:
        info = model_info(arch)
        if info.get("deployable"):
            widths = list(info.get("width_mults") or (DEFAULT_WIDTHS if _takes_width(arch) else []))
            out.append(SpaceParams(arch=arch, width_mults=widths, input_sizes=sizes))
    return out


def expand(space: list[SpaceParams], data_size: int) -> list[Candidate]:
    """Every candidate of the space, unique, in the order listed; unknown archs are a KdpipeError."""
    from pipeline import models

    known = models.list_models()
    out: dict[str, Candidate] = {}
    for i, s in enumerate(space):
        if s.arch not in known:
            raise KdpipeError(
                f"select.candidates[{i}].arch: unknown arch {s.arch!r}; choose one of: {', '.join(known)}"
            )
        if "width_mult" in s.arch_kwargs and s.width_mults:
            raise KdpipeError(
                f"select.candidates[{i}]: width_mult is in both arch_kwargs and width_mults; keep one"
            )
        for w in s.width_mults or [None]:
            kw = dict(s.arch_kwargs) | ({"width_mult": w} if w is not None else {})
            for size in _sizes(s.input_sizes, data_size):
                c = Candidate(s.arch, size, kw)
                out.setdefault(json.dumps(c.key(), sort_keys=True), c)
    return list(out.values())


def build(c: Candidate, num_classes: int, in_channels: int, seed: int) -> nn.Module:
    """The candidate, initialised from `seed` (the same model every run), in eval mode."""
    import torch

    from pipeline import models

    torch.manual_seed(seed)
    return models.create_model(c.arch, num_classes, in_channels, **c.arch_kwargs).eval()


def count_macs(model: nn.Module, in_channels: int, size: int) -> int:
    """Multiply-accumulates per image: FLOPs / 2 as torch's FlopCounterMode counts them (convs, matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_channels, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    return int(counter.get_total_flops() // 2)


def describe(c: Candidate, model: nn.Module, num_classes: int, in_channels: int) -> dict:
    """{params, macs} from the registry's `describe` when it has one (and no kwargs), else counted here."""
    from pipeline import models

    fn = getattr(models, "describe", None)
    if fn is not None and not c.arch_kwargs:
        d = fn(c.arch, num_classes, in_channels, c.input_size)
        return {"params": int(d["params"]), "macs": int(d["macs"])}
    return {"params": models.num_parameters(model), "macs": count_macs(model, in_channels, c.input_size)}


def resolve_selected(path: str | Path) -> tuple[str, dict, int]:
    """(arch, arch_kwargs, input_size) of the student chosen by select-student, from its selected.json."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(
            f"{path}: no selected student yet; run select-student (dvc repro) before "
            "training a student with arch: selected"
        )
    try:
        doc = json.loads(path.read_text())
        arch, kwargs, size = doc["arch"], doc["arch_kwargs"], doc["input_size"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KdpipeError(
            f"{path}: not a select-student result ({type(e).__name__}: {e}); delete it and run "
            "select-student (dvc repro)"
        ) from None
    if not isinstance(arch, str) or not isinstance(kwargs, dict) or not isinstance(size, int) or size < 1:
        raise KdpipeError(
            f"{path}: malformed select-student result (arch {arch!r}, arch_kwargs {kwargs!r}, "
            f"input_size {size!r}); delete it and run select-student (dvc repro)"
        )
    return arch, kwargs, size


def violations(row: dict, sp: SelectParams) -> list[str]:
    """The limits of the budget that a measured row breaks ([] = it fits)."""
    stat = f"{sp.latency_stat}_ms"
    checks = [
        (sp.latency_ms, row[stat], f"{sp.latency_stat} {row[stat]:.3f} ms > {sp.latency_ms:g} ms"),
        (sp.max_mb, row["size_mb"], f"{row['size_mb']:.3f} MB > {sp.max_mb:g} MB"),
        (sp.max_params, row["params"], f"{row['params']:,} params > {sp.max_params:,}"),
        (sp.max_macs, row["macs"], f"{row['macs']:,} MACs > {sp.max_macs:,.0f}"),
    ]
    return [why for limit, value, why in checks if limit and value > limit]
