"""Typed, strict parameters: one frozen dataclass per params.yaml section.

`load_params(path)` turns params.yaml into a `Params` object. It is strict: an unknown key, a
missing required key or a wrong type raises `KdpipeError` naming the key path and the file, so a
typo in a `dvc exp run -S` override fails loudly instead of being ignored. Method blocks (e.g.
`students.kd_r8.kd: {temperature: 4}`) are parsed with the dataclass that the method registers
(`pipeline.methods.REGISTRY`), so each method owns its parameters.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import KdpipeError


@dataclass(frozen=True)
class BaseParams:
    seed: int = 0  # global seed; per-model seeds are added to it
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (one per core)


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
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # images per optimizer step (global, across DDP ranks)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (Adam: beta1)
    nesterov: bool = True  # SGD Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] = field(default_factory=list)  # multistep: epochs at which lr *= gamma
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: int = 0  # linear warm-up from lr/10 over this many epochs
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # autocast dtype on CUDA (auto = bf16 if supported)
    compile: bool = False  # torch.compile the student
    channels_last: bool = True  # NHWC memory format on CUDA (ignored on CPU)
    eval_every: int = 1  # validate every N epochs (the last epoch is always validated)


@dataclass(frozen=True)
class ModelParams:
    """A teacher or a student: architecture, method and recipe."""

    arch: str  # registry name, see `pipeline.models.list_models()`
    method: str = "ce"  # registry name, see `pipeline.methods.REGISTRY`
    teachers: list[str] = field(default_factory=list)  # knowledge sources: teacher names or students/<name>
    seed: int = 0  # added to base.seed; different seeds give different initialisations
    targets: Literal["online", "cached"] = "online"  # run teachers each step, or read infer-targets' logits
    cached_with_augment: bool = False  # allow cached (un-augmented) targets together with augmentation
    augment: bool = True  # random crop/flip on the training images
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the architecture
    optim: OptimParams = field(default_factory=OptimParams)
    args: Any = None  # the method's own block, parsed into its registered dataclass


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 512  # images per forward pass
    ece_bins: int = 15  # equal-width confidence bins for the expected calibration error
    ensembles: dict[str, list[str]] = field(default_factory=dict)  # name -> members (teacher names or students/<n>); mean of softmaxes


@dataclass(frozen=True)
class ExportParams:
    students: list[str] = field(default_factory=list)  # students to export: dvc.yaml makes one export stage per entry
    opset: int = 18  # ONNX opset
    parity_atol: float = 1e-4  # max |logit difference| allowed between ORT and torch
    calib_images: int = 512  # training images for INT8 calibration
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_type: Literal["u8", "s8"] = "u8"  # INT8 activations (u8 is faster on x86 VNNI)
    weight_type: Literal["s8", "u8"] = "s8"  # INT8 weights
    per_channel: bool = True  # per-channel weight scales
    fp32_stem: bool = True  # keep the first conv in fp32: with 1 input channel it measured slower in INT8 (and less exact)
    latency_runs: int = 30  # timed runs per (runtime, batch size)
    latency_warmup: int = 5  # untimed warm-up runs
    threads: int = 0  # intra-op threads for torch and ORT (0 = all cores)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])  # latency batch sizes


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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert it; raise KdpipeError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, where)
            except KdpipeError as e:
                errors.append(str(e))
        raise KdpipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise KdpipeError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise KdpipeError(f"{where}: expected a list, got {value!r}")
        return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise KdpipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise KdpipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KdpipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KdpipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise KdpipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise KdpipeError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, strictly (unknown keys and wrong types are errors)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KdpipeError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise KdpipeError(f"{where}.{unknown[0]}: unknown key; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KdpipeError(f"{where}.{name}: required key is missing")
    return cls(**kwargs)


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


def to_dict(obj: Any) -> Any:
    """Plain-Python view of a params object (for artifacts and logs)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
