"""INT8 recipes per model family: which nodes stay fp32 (`KEEP_RULES` over the ONNX graph), graph
rewrites before quantization (`FUSIONS`, from pipeline.quant_fusions), and `RECIPES`, the default recipe
of each family.

The rules read the graph, so they work for any exported nn.Module; `recipe_for(arch)` picks the
family's recipe from `pipeline.models.model_info` (figures: bench/results_int8_families.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from pipeline.errors import KdpipeError
from pipeline.onnx_graph import consumers, first_conv, is_depthwise, stem_block
from pipeline.quant_fusions import FUSIONS  # noqa: F401 - re-exported for quantize

DEFAULT_OPS = tuple(sorted(set(QLinearOpsRegistry) | set(QDQRegistry)))  # ORT's default set, in a fixed order


def _stem(graph: onnx.GraphProto) -> list[str]:
    """The first Conv (graph order is topological)."""
    first = first_conv(graph)
    return [first.name] if first is not None else []


def _classifier(graph: onnx.GraphProto) -> list[str]:
    """The last Gemm/MatMul (the logits layer)."""
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")][-1:]


def _depthwise(graph: onnx.GraphProto) -> list[str]:
    """Grouped Convs with one input channel per group (weight shape [C, 1, k, k], group > 1)."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node if is_depthwise(n, dims)]


def _se(graph: onnx.GraphProto) -> list[str]:
    """Squeeze-excitation gates: every node from a global pooling (GlobalAveragePool, or ReduceMean over
    H and W) to the Mul that scales the feature map with the gate (pool -> conv -> act -> conv -> sigmoid)."""
    cons, keep = consumers(graph), []
    for n in graph.node:
        if n.op_type not in ("GlobalAveragePool", "ReduceMean"):
            continue
        path, frontier = [n], [n]
        for _ in range(6):  # at most 6 hops to the gating Mul
            nxt = [c for f in frontier for o in f.output for c in cons.get(o, [])]
            mul = [c for c in nxt if c.op_type == "Mul"]
            if mul:
                keep += [p.name for p in path] + [mul[0].name]
                break
            if not nxt or any(c.op_type in ("Gemm", "Flatten", "Reshape", "MatMul") for c in nxt):
                break  # the classifier head, not a gate
            path += nxt
            frontier = nxt
    return list(dict.fromkeys(keep))


def _thin_stem(graph: onnx.GraphProto) -> list[str]:
    """The first Conv when its GEMM depth K = C_in * kh * kw is under 16 (a 1-channel 3x3 stem: K = 9):
    such a conv measured 5.6x slower in INT8 than in fp32 (0.90 vs 0.16 ms, resnet8, batch 64)."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    first = first_conv(graph)
    w = dims.get(first.input[1], []) if first is not None else []
    return [first.name] if len(w) == 4 and w[1] * w[2] * w[3] < 16 else []


def _se_mul(graph: onnx.GraphProto) -> list[str]:
    """Only the gating Muls of squeeze-excitation blocks (feature map x per-channel gate, a broadcast)."""
    ops = {n.name: n.op_type for n in graph.node}
    return [n for n in _se(graph) if ops[n] == "Mul"]


def _stem_block(graph: onnx.GraphProto) -> list[str]:
    """The stem block (`onnx_graph.stem_block`): the first Conv, its activation and, in mobilenets and
    efficientnets, the depthwise Conv after it with its activation. In fp32, ORT runs them as blocked-layout
    Convs with fused activations and the model quantizes the depthwise conv's output (4x smaller in
    mobilenet_v3_small, stride 2) instead of the stem's, its largest tensor."""
    return [n.name for n in stem_block(graph)]


KEEP_RULES: dict[str, Callable[[onnx.GraphProto], list[str]]] = {
    "stem": _stem,
    "stem_block": _stem_block,
    "thin_stem": _thin_stem,
    "classifier": _classifier,
    "depthwise": _depthwise,
    "se": _se,
    "se_mul": _se_mul,
}


@dataclass(frozen=True)
class Recipe:
    """How one model family is quantized. `keep`: KEEP_RULES names whose nodes stay fp32; `op_types`:
    op types to quantize (empty = ORT's default set); `extra`: quantize_static extra_options."""

    name: str
    keep: tuple[str, ...] = ("stem",)
    per_channel: bool = True
    op_types: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    fusions: tuple[str, ...] = ()  # FUSIONS graph rewrites applied before quantization


# Chosen from INT8/ORT-fp32 p50 ratios at 96 px RGB, 1 thread, untrained weights, variants timed in one run
# (bench/results_int8_families.md has the defaults against ORT's default QDQ), on three CPUs.
# AMD EPYC, AVX2 without VNNI. Slower than quantizing everything: the first conv fp32 when it has 3 input
# channels (resnet18 b32 1.59x vs 2.19x), SE blocks fp32 (efficientnet_b0 b32 1.18x vs 1.63x), depthwise convs
# fp32 (mobilenet_v2 b32 1.35x vs 1.88x), only Conv/Gemm quantized (mobilenet_v2 1.06x). The ReduceMean ->
# GlobalAveragePool rewrite gained most on SE families (efficientnet_b0 b1 1.27x vs 1.11x, mobilenet_v3_large
# b1 1.22x vs 1.09x). Per-tensor weights, SE Muls or depthwise fp32 on mobilenet_v3_small and
# shufflenet_v2_x0_5 stayed within run-to-run noise (+-10 %).
# Xeon with AVX512-VNNI and AMX (b32): RGB stem fp32 slower (resnet18 1.93x vs 3.44x, shufflenet_v2_x1_0 1.02x
# vs 1.76x), SE fp32 slower (efficientnet_b0 1.24x vs 1.47x), depthwise fp32 slower (mobilenet_v2 1.45x vs
# 1.87x), per-tensor weights within noise, U8U8 and S8S8 3x slower (resnet18 1.20x, 1.10x vs 3.5x). The
# HardSigmoid -> Add + Clip rewrite (quant_fusions) lifts mobilenet_v3_small b32 from 0.87x to 1.05x and
# mobilenet_v3_large from 1.20x to 1.37x (two runs); with it, an fp32 stem (16 output channels, then a
# hardswish that the fp32 Conv fuses) adds 4-7 % on both nets at b1 and b32.
# AMD EPYC with AVX512-VNNI and AVX-VNNI, every rewrite, b32: with only its stem conv fp32,
# mobilenet_v3_small stayed under its floor (1.20x vs 1.24; ORT default 0.95x). Its variants in one run:
# stem INT8 1.12x, per-tensor weights 1.21x, SE or SE Muls fp32 1.19x, all depthwise convs fp32 1.01x, no
# saturation clips 1.22x (for accuracy, kept), no HardSigmoid rewrite 1.04x. Profiled, a fifth of its INT8
# time went around the stem: the fp32 conv in ORT's blocked layout, the reorder of its output to NCHW, the
# quantization of that largest tensor ([32, 16, 48, 48]) and its hardswish as an integer Add and Mul.
# Keeping the stem block fp32 (the stem conv with its hardswish fused, and the stride-2 depthwise conv after
# it) quantizes a 4x smaller tensor: 1.37x vs 1.23x at b32 and 1.42x vs 1.22x at b1 in one run;
# efficientnet_b0 1.39x vs 1.33x (b1 1.21x vs 1.08x: its SiLUs stay fp32 there), mobilenet_v3_large 1.55x vs
# 1.50x; mobilenet_v2 (stride-1 depthwise conv: nothing gets smaller) 2.37x vs 2.65x at b32 although 2.38x
# vs 1.94x at b1, so it keeps only a thin stem fp32.
# AMD EPYC, profiled at b32: the input's Div by std is 2-4 % of the INT8 time (mobilenet_v2 1.1 of 60 ms,
# mobilenet_v3_small 1.2 of 30 ms); the input_scale rewrite folds it into the stem weights.
# So: ORT's op types, the pooling, HardSigmoid and input-scale rewrites, the saturation clips (exact; for
# accuracy, not speed), a thin (K < 16) stem kept fp32 everywhere, and the stem block fp32 in mobilenet_v3 and
# efficientnet.
_BASE = {"keep": ("thin_stem",), "fusions": ("global_pool", "saturate", "hard_sigmoid", "input_scale")}
FAMILIES = (
    "default",
    "resnet",
    "resnet_cifar",
    "mobilenet_v2",
    "mobilenet_v3",
    "shufflenet_v2",
    "efficientnet",
    "regnet",
    "convnext",
)
RECIPES: dict[str, Recipe] = {f: Recipe(f, **_BASE) for f in FAMILIES}
_STEM_BLOCK = {"keep": ("stem_block",), "fusions": ("stem_hardswish", *_BASE["fusions"])}
RECIPES |= {f: Recipe(f, **_STEM_BLOCK) for f in ("mobilenet_v3", "efficientnet")}
MANUAL = "manual"  # recipe name when the caller's own per_channel / fp32_stem settings are used
# Used only while pipeline.models has no model_info: (arch name prefix, family), first match wins.
_PREFIXES = (
    ("tv_resnet", "resnet"),
    ("resnet18", "resnet"),
    ("resnet34", "resnet"),
    ("resnet50", "resnet"),
    ("resnet", "resnet_cifar"),
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3"),
    ("shufflenet_v2", "shufflenet_v2"),
    ("efficientnet", "efficientnet"),
    ("regnet", "regnet"),
    ("convnext", "convnext"),
)


def family_of(arch: str) -> str:
    """The model family of `arch` (pipeline.models.model_info, else a guess from the name; unknown ->
    default)."""
    try:
        from pipeline.models import model_info

        fam = model_info(arch)["family"]
        return fam if fam in RECIPES else "default"
    except (ImportError, KeyError, KdpipeError):
        return next((f for pre, f in _PREFIXES if arch.startswith(pre)), "default")


def recipe_for(arch: str, choice: str = "auto") -> Recipe | None:
    """The recipe `choice` names (auto = the arch's family; manual -> None: the caller's own settings)."""
    if choice == MANUAL:
        return None
    key = family_of(arch) if choice == "auto" else choice
    if key not in RECIPES:
        raise KdpipeError(
            f"export.recipe {choice!r} is not an INT8 recipe; choose auto, {MANUAL} or one of "
            f"{', '.join(RECIPES)}"
        )
    return RECIPES[key]


def nodes_for(recipe: Recipe, graph: onnx.GraphProto) -> list[str]:
    """The node names `recipe.keep` selects in `graph`, in graph order, without duplicates."""
    unknown = [k for k in recipe.keep if k not in KEEP_RULES]
    if unknown:
        raise KdpipeError(
            f"INT8 recipe {recipe.name!r}: unknown keep rule(s) {unknown}; known: {sorted(KEEP_RULES)}"
        )
    chosen = {name for k in recipe.keep for name in KEEP_RULES[k](graph)}
    return [n.name for n in graph.node if n.name in chosen]


def with_options(recipe: Recipe, **changes) -> Recipe:
    """A copy of `recipe` with some fields replaced (for benchmarks comparing variants)."""
    return dataclasses.replace(recipe, **changes)
