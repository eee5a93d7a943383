"""Typed, strict parameters: one frozen dataclass per params.yaml section.

`load_params(path)` turns params.yaml into a `Params` object. It is strict: an unknown key, a
missing required key or a wrong type raises `KdpipeError` naming the key path and the file, so a
typo in a `dvc exp run -S` override fails loudly instead of being ignored. Method blocks (e.g.
`students.kd_r8.kd: {temperature: 4}`) are parsed with the dataclass that the method registers
(`pipeline.methods.REGISTRY`), so each method owns its parameters.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config import bounded, convert, from_dict, to_dict  # noqa: F401 - re-exported for callers
from pipeline.errors import KdpipeError


@dataclass(frozen=True)
class BaseParams:
    seed: int = bounded(0, ge=0)  # global seed; per-model seeds are added to it
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    threads: int = bounded(0, ge=0)  # torch CPU threads; 0 keeps torch's default (one per core)


@dataclass(frozen=True)
class DataParams:
    source: Literal["fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"] = "fashion_mnist"
    root: str = "data/raw"  # torchvision root or ImageFolder directory (with train/ and test/)
    download: bool = False  # allow torchvision to download (only on request; never in tests)
    val_size: int = 5000  # images held out of the training split for validation (by seed)
    train_subset: int = 0  # keep this many training images after the split (0 = all), class-balanced
    test_subset: int = 0  # keep this many test images (0 = all); for quick profiles only
    image_size: int = 0  # resize ImageFolder images to this square size in pixels (0 = keep 32)
    pad: int = 4  # random-crop padding in pixels for augmentation (0 = no crop)
    flip: bool | None = None  # horizontal flip; None = the data set's default (off for digits)
    synthetic_train: int = 512  # synthetic source: training images (before the validation split)
    synthetic_test: int = 256  # synthetic source: test images
    synthetic_classes: int = 4  # synthetic source: number of classes
    synthetic_size: int = 16  # synthetic source: image side in pixels
    synthetic_channels: int = 1  # synthetic source: channels


@dataclass(frozen=True)
class OptimParams:
    epochs: int = bounded(10, ge=1)  # passes over the training split
    batch_size: int = bounded(128, ge=1)  # images per optimizer step (global, across DDP ranks)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = bounded(0.1, gt=0)  # peak learning rate
    momentum: float = bounded(0.9, ge=0, lt=1)  # SGD momentum (Adam: beta1)
    nesterov: bool = True  # SGD Nesterov momentum
    weight_decay: float = bounded(5e-4, ge=0)  # L2 penalty
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] = bounded([], ge=0)  # multistep: epochs at which lr *= gamma
    gamma: float = bounded(0.1, gt=0, le=1)  # multistep decay factor
    warmup_epochs: int = bounded(0, ge=0)  # linear warm-up from lr/10 over this many epochs
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # autocast dtype on CUDA (auto = bf16 if supported)
    compile: bool = False  # torch.compile the student
    channels_last: bool = True  # NHWC memory format on CUDA (ignored on CPU)
    eval_every: int = bounded(1, ge=1)  # validate every N epochs (the last epoch is always validated)


@dataclass(frozen=True)
class ModelParams:
    """A teacher or a student: architecture, method and recipe."""

    arch: str  # registry name, see `pipeline.models.list_models()`
    method: str = "ce"  # registry name, see `pipeline.methods.REGISTRY`
    teachers: list[str] = field(default_factory=list)  # knowledge sources: teacher names or students/<name>
    seed: int = bounded(0, ge=0)  # added to base.seed; different seeds give different initialisations
    targets: Literal["online", "cached"] = "online"  # run teachers each step, or read infer-targets' logits
    cached_with_augment: bool = False  # allow cached (un-augmented) targets together with augmentation
    augment: bool = True  # random crop/flip on the training images
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the architecture
    optim: OptimParams = field(default_factory=OptimParams)
    args: Any = None  # the method's own block, parsed into its registered dataclass


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = bounded(512, ge=1)  # images per forward pass
    ece_bins: int = bounded(15, ge=1)  # equal-width confidence bins for the expected calibration error
    ensembles: dict[str, list[str]] = field(default_factory=dict)  # name -> members (teacher names or students/<n>); mean of softmaxes


@dataclass(frozen=True)
class ExportParams:
    students: list[str] = field(default_factory=list)  # students to export: dvc.yaml makes one export stage per entry
    opset: int = bounded(18, ge=18)  # ONNX opset
    parity_atol: float = bounded(1e-4, gt=0)  # ORT vs torch: max |Δlogit| <= parity_atol + parity_rtol * max |logit|
    parity_rtol: float = bounded(1e-4, ge=0)  # the part of the parity tolerance relative to the logit scale
    calib_images: int = bounded(512, ge=1)  # training images for INT8 calibration
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_type: Literal["u8", "s8"] = "u8"  # INT8 activations (u8 is faster on x86 VNNI)
    weight_type: Literal["s8", "u8"] = "s8"  # INT8 weights
    per_channel: bool = True  # recipe "manual" only: per-channel weight scales
    fp32_stem: bool = True  # recipe "manual" only: keep the first conv in fp32
    recipe: str = "auto"  # INT8 recipe: auto (the arch's family in pipeline.quantize.RECIPES), a RECIPES key, or manual
    int8_max_drop: float = bounded(0.5, ge=0)  # allowed INT8 top-1 drop on the validation split, in points
    int8_max_tries: int = bounded(5, ge=0)  # fallback steps (one more node group kept fp32 each) to meet int8_max_drop
    latency_runs: int = bounded(30, ge=1)  # timed runs per (runtime, batch size)
    latency_warmup: int = bounded(5, ge=0)  # untimed warm-up runs
    threads: int = bounded(0, ge=0)  # intra-op threads for torch and ORT (0 = all cores)
    batch_sizes: list[int] = bounded([1, 64], ge=1)  # latency batch sizes


@dataclass(frozen=True)
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    data: DataParams = field(default_factory=DataParams)
    teachers: dict[str, ModelParams] = field(default_factory=dict)
    students: dict[str, ModelParams] = field(default_factory=dict)
    patriarchs: dict[str, ModelParams] = field(default_factory=dict)  # first teachers of generation chains
    generations: dict[str, ModelParams] = field(default_factory=dict)  # chained students, one teacher each
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    extra: dict[str, Any] = field(default_factory=dict)  # sections owned by other stages (parsed there)


MODEL_SECTIONS = ("teachers", "students", "patriarchs", "generations")

# Sections that stages parse themselves with their own dataclass (e.g. `professor`, `probes`, `factor`).
EXTRA_SECTIONS = ("professor", "probes", "factor", "report", "bench")


def parse_model(data: Any, where: str) -> ModelParams:
    """Parse a teacher/student entry; its method block (key = method name) goes to `args`."""
    from pipeline.methods import REGISTRY  # late import: methods import this module

    if not isinstance(data, dict):
        raise KdpipeError(f"{where}: expected a mapping with at least 'arch', got {data!r}")
    method = data.get("method", "ce")
    if method not in REGISTRY:
        raise KdpipeError(f"{where}.method: unknown method {method!r}; known: {', '.join(sorted(REGISTRY))}")
    own = {k: v for k, v in data.items() if k != method}
    spec = from_dict(ModelParams, own, where)
    args = convert(data.get(method) or {}, REGISTRY[method].Params, f"{where}.{method}")
    return dataclasses.replace(spec, args=args)


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Parse an already loaded params mapping; `source` names the file in error messages."""
    if not isinstance(raw, dict):
        raise KdpipeError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(Params)} - {"extra"}
    unknown = [k for k in raw if k not in known and k not in EXTRA_SECTIONS]
    if unknown:
        raise KdpipeError(f"{source}: {unknown[0]}: unknown section; known: {', '.join(sorted(known | set(EXTRA_SECTIONS)))}")
    try:
        out = Params(
            base=from_dict(BaseParams, raw.get("base"), "base"),
            data=from_dict(DataParams, raw.get("data"), "data"),
            teachers={str(k): parse_model(v, f"teachers.{k}") for k, v in (raw.get("teachers") or {}).items()},
            students={str(k): parse_model(v, f"students.{k}") for k, v in (raw.get("students") or {}).items()},
            patriarchs={str(k): parse_model(v, f"patriarchs.{k}") for k, v in (raw.get("patriarchs") or {}).items()},
            generations={str(k): parse_model(v, f"generations.{k}") for k, v in (raw.get("generations") or {}).items()},
            evaluate=from_dict(EvaluateParams, raw.get("evaluate"), "evaluate"),
            export=from_dict(ExportParams, raw.get("export"), "export"),
            extra={k: raw[k] for k in EXTRA_SECTIONS if k in raw},
        )
    except KdpipeError as e:
        raise KdpipeError(f"{source}: {e}") from None
    names: dict[str, str] = {}
    for sec in MODEL_SECTIONS:
        for name in getattr(out, sec):
            if name in names:
                raise KdpipeError(f"{source}: {name!r} is in both {names[name]} and {sec}; model names must be unique")
            names[name] = sec
    for sec in MODEL_SECTIONS:
        for name, spec in getattr(out, sec).items():
            for t in spec.teachers:
                tsec, _, tname = t.rpartition("/")
                if (tsec or "teachers") not in MODEL_SECTIONS or tname not in getattr(out, tsec or "teachers"):
                    raise KdpipeError(f"{source}: {sec}.{name}.teachers: {t!r} is not a model in params; "
                                      f"use a teacher name or <section>/<name> ({', '.join(MODEL_SECTIONS)})")
    for name, spec in out.generations.items():
        if len(spec.teachers) != 1 or "/" not in spec.teachers[0]:
            raise KdpipeError(f"{source}: generations.{name} must name exactly one teacher as <section>/<name> "
                              "(e.g. patriarchs/tol, generations/gen1, teachers/resnet20_a)")
    from pipeline.generations import generation_order, known_models  # cycle check, one line

    try:
        generation_order(out.generations, "generations", known_models(out))
    except KdpipeError as e:
        raise KdpipeError(f"{source}: {e}") from None
    return out


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every problem is a one-line KdpipeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise KdpipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    return parse_params(raw, str(path))


def section(params: Params, name: str, cls: type) -> Any:
    """Parse an extra section (owned by one stage) strictly with its dataclass."""
    try:
        return from_dict(cls, params.extra.get(name), name)
    except KdpipeError as e:
        raise KdpipeError(f"params: {e}") from None
