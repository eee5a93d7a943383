"""Typed, strict parameters: one frozen dataclass per params.yaml section.

`load_params(path)` turns params.yaml into a `Params` object. It is strict: an unknown key, a
missing required key or a wrong type raises `KdpipeError` naming the key path and the file, so a
typo in a `dvc exp run -S` override fails loudly instead of being ignored. Method blocks (e.g.
`students.kd_r8.kd: {temperature: 4}`) are parsed with the dataclass that the method registers
(`pipeline.methods.REGISTRY`), so each method owns its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import bounded, convert, from_dict, to_dict  # noqa: F401 - re-exported for callers
from pipeline.data.params import DataParams
from pipeline.errors import KdpipeError
from pipeline.models.init import InitParams
from pipeline.select_space import SelectParams


@dataclass(frozen=True)
class BaseParams:
    seed: int = bounded(0, ge=0)  # global seed; per-model seeds are added to it
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    threads: int = bounded(0, ge=0)  # torch CPU threads; 0 keeps torch's default (one per core)


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
    channels_last: bool = True  # NHWC memory format on CUDA and CPU (faster convolutions on both)
    eval_every: int = bounded(1, ge=1)  # validate every N epochs (the last epoch is always validated)


@dataclass(frozen=True)
class ModelParams:
    """A teacher or a student: architecture, method and recipe."""

    arch: str  # registry name, see `pipeline.models.list_models()`
    method: str = "ce"  # registry name, see `pipeline.methods.REGISTRY`
    teachers: list[str] = field(default_factory=list)  # knowledge sources: teacher names or students/<name>
    seed: int = bounded(0, ge=0)  # added to base.seed; different seeds give different initialisations
    # one model per seed, named <name>_s<seed> (replaces `seed`); [] = one model
    seeds: list[int] = bounded([], ge=0)
    # student this one is compared with, paired by seed ("" = the ce student of the same arch)
    baseline: str = ""
    group: str = ""  # set when params load: the entry's name before seed expansion
    targets: Literal["online", "cached"] = "online"  # run teachers each step, or read infer-targets' logits
    cached_with_augment: bool = False  # allow cached (un-augmented) targets together with augmentation
    augment: bool = True  # random crop/flip on the training images
    # train on this many class-balanced images of the training split (0 = all); same images for every
    # model with the same number and base.seed, so paired comparisons stay paired
    train_subset: int = bounded(0, ge=0)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the architecture
    # start from a weights file on disk (a DVC dep of the stage); None = random init
    init: InitParams | None = None
    optim: OptimParams = field(default_factory=OptimParams)
    args: Any = None  # the method's own block, parsed into its registered dataclass


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = bounded(512, ge=1)  # images per forward pass
    ece_bins: int = bounded(15, ge=1)  # equal-width confidence bins for the expected calibration error
    # name -> members (teacher names or students/<n>); mean of softmaxes
    ensembles: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportParams:
    # students to export: dvc.yaml makes one export stage per entry
    students: list[str] = field(default_factory=list)
    opset: int = bounded(18, ge=18)  # ONNX opset
    # ORT vs torch: max |Δlogit| <= parity_atol + parity_rtol * max |logit|
    parity_atol: float = bounded(1e-4, gt=0)
    parity_rtol: float = bounded(1e-4, ge=0)  # the part of the parity tolerance relative to the logit scale
    calib_images: int = bounded(512, ge=1)  # training images for INT8 calibration
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_type: Literal["u8", "s8"] = "u8"  # INT8 activations (u8 is faster on x86 VNNI)
    weight_type: Literal["s8", "u8"] = "s8"  # INT8 weights
    per_channel: bool = True  # recipe "manual" only: per-channel weight scales
    fp32_stem: bool = True  # recipe "manual" only: keep the first conv in fp32
    # INT8 recipe: auto (the arch's family in pipeline.quantize.RECIPES), a RECIPES key, or manual
    recipe: str = "auto"
    int8_max_drop: float = bounded(0.5, ge=0)  # allowed INT8 top-1 drop on the validation split, in points
    # fallback steps (one more node group kept fp32 each) to meet int8_max_drop
    int8_max_tries: int = bounded(5, ge=0)
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
    select: SelectParams | None = None  # select-student: the deployment budget and candidate space (optional)
    extra: dict[str, Any] = field(default_factory=dict)  # sections owned by knowledge stages (parsed there)

    def model(self, ref: str) -> tuple[str, str, ModelParams]:
        """(section, name, spec) of a model reference: a bare name is a teacher, else `<section>/<name>`."""
        section, _, name = ref.rpartition("/")
        section = section or "teachers"
        models = getattr(self, section, None) if section in MODEL_SECTIONS else None
        if models is None or name not in models:
            raise KdpipeError(f"{ref!r} is not a model in params; use a teacher name or <section>/<name>")
        return section, name, models[name]

    def teacher(self, ref: str) -> ModelParams:
        """The entry of a model that teaches (`model`), or one line listing the teachers params has."""
        try:
            return self.model(ref)[2]
        except KdpipeError:
            raise KdpipeError(
                f"no teacher {ref!r} in params; name a key of teachers, or <section>/<name> "
                f"(known teachers: {', '.join(self.teachers) or 'none'})"
            ) from None


MODEL_SECTIONS = ("teachers", "students", "patriarchs", "generations")

# Sections that knowledge stages parse with their own dataclass; each is optional.
EXTRA_SECTIONS = ("professor", "probes", "factor")


def model_entries(p: Params) -> list[tuple[str, str, ModelParams]]:
    """Every model of the params (seeds expanded), as (section, name, spec), in section order."""
    return [(sec, name, spec) for sec in MODEL_SECTIONS for name, spec in getattr(p, sec).items()]


def model_ref(section: str, name: str) -> str:
    """The reference other entries use for a model: bare for teachers, `<section>/<name>` otherwise."""
    return name if section == "teachers" else f"{section}/{name}"


def section(params: Params, name: str, cls: type) -> Any:
    """Parse an extra section (owned by one stage) strictly with its dataclass."""
    try:
        return from_dict(cls, params.extra.get(name), name)
    except KdpipeError as e:
        raise KdpipeError(f"params: {e}") from None
