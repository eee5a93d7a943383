"""INT8 recipes per model family: which nodes stay fp32 (`KEEP_RULES` over the ONNX graph), graph
rewrites before quantization (`FUSIONS`), and `RECIPES`, the default recipe of each family.

The rules read the graph, so they work for any exported nn.Module; `recipe_for(arch)` picks the
family's recipe from `pipeline.models.model_info` (figures: bench/results_int8_families.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from pipeline.errors import KdpipeError

DEFAULT_OPS = tuple(sorted(set(QLinearOpsRegistry) | set(QDQRegistry)))  # ORT's default set, in a fixed order


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def _stem(graph: onnx.GraphProto) -> list[str]:
    """The first Conv (graph order is topological)."""
    return [n.name for n in graph.node if n.op_type == "Conv"][:1]


def _classifier(graph: onnx.GraphProto) -> list[str]:
    """The last Gemm/MatMul (the logits layer)."""
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")][-1:]


def _depthwise(graph: onnx.GraphProto) -> list[str]:
    """Grouped Convs with one input channel per group (weight shape [C, 1, k, k], group > 1)."""
    dims = {t.name: list(t.dims) for t in graph.initializer}

    def group(n: onnx.NodeProto) -> int:
        return next((a.i for a in n.attribute if a.name == "group"), 1)

    return [
        n.name
        for n in graph.node
        if n.op_type == "Conv" and group(n) > 1 and dims.get(n.input[1], [0, 0])[1] == 1
    ]


def _se(graph: onnx.GraphProto) -> list[str]:
    """Squeeze-excitation gates: every node from a global pooling (GlobalAveragePool, or ReduceMean over
    H and W) to the Mul that scales the feature map with the gate (pool -> conv -> act -> conv -> sigmoid)."""
    cons, keep = _consumers(graph), []
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
    first = next((n for n in graph.node if n.op_type == "Conv"), None)
    w = dims.get(first.input[1], []) if first is not None else []
    return [first.name] if len(w) == 4 and w[1] * w[2] * w[3] < 16 else []


def _se_mul(graph: onnx.GraphProto) -> list[str]:
    """Only the gating Muls of squeeze-excitation blocks (feature map x per-channel gate, a broadcast)."""
    ops = {n.name: n.op_type for n in graph.node}
    return [n for n in _se(graph) if ops[n] == "Mul"]


KEEP_RULES: dict[str, Callable[[onnx.GraphProto], list[str]]] = {
    "stem": _stem,
    "thin_stem": _thin_stem,
    "classifier": _classifier,
    "depthwise": _depthwise,
    "se": _se,
    "se_mul": _se_mul,
}


def _global_pool(model: onnx.ModelProto) -> None:
    """ReduceMean over H and W of a 4-D tensor -> GlobalAveragePool (the same mean; + Flatten when
    keepdims=0), which ORT runs in INT8 (QLinearGlobalAveragePool) while ReduceMean stays fp32 between a DQ
    and a Q."""
    g = model.graph
    consts = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in g.initializer if len(t.dims) <= 1}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t).tolist()
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in list(g.value_info) + list(g.input)}
    nodes = []
    for n in g.node:
        nodes.append(n)
        keepdims = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
        axes = consts.get(n.input[1]) if n.op_type == "ReduceMean" and len(n.input) > 1 else None
        if axes is None or rank.get(n.input[0]) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        n.op_type = "GlobalAveragePool"
        del n.input[1:]
        del n.attribute[:]
        if not keepdims:  # [N, C, 1, 1] -> [N, C] as ReduceMean gave
            out = n.output[0]
            n.output[0] = f"{out}_pooled"
            nodes.append(
                onnx.helper.make_node("Flatten", [n.output[0]], [out], name=f"{n.name}_flatten", axis=1)
            )
    del g.node[:]
    g.node.extend(nodes)
    used = {t for n in g.node for t in n.input}
    dead = [t for t in g.initializer if t.name not in used]  # the axes tensors: ORT would warn about them
    for t in dead:
        g.initializer.remove(t)


def _attr(n: onnx.NodeProto, name: str, default: float) -> float:
    return next((a.f for a in n.attribute if a.name == name), default)


def _bounds(t: str, users: list[onnx.NodeProto]) -> list[float] | None:
    """[lo] or [lo, hi] beyond which every user of tensor `t` is constant, or None: HardSwish ops (lo = -3),
    or one HardSigmoid h (lo = -beta/alpha, hi = (1 - beta)/alpha) with, at most, the Muls t * h(t) of an
    inlined HardSwish (then no hi)."""
    if users and all(c.op_type == "HardSwish" for c in users):
        return [-3.0]
    hs = [c for c in users if c.op_type == "HardSigmoid"]
    rest = [c for c in users if c.op_type != "HardSigmoid"]
    if len(hs) != 1 or not all(c.op_type == "Mul" and set(c.input) == {t, hs[0].output[0]} for c in rest):
        return None  # t also feeds something that sees values beyond the saturation points
    alpha, beta = _attr(hs[0], "alpha", 0.2), _attr(hs[0], "beta", 0.5)
    return [-beta / alpha] + ([] if rest else [(1 - beta) / alpha])


def _saturate(model: onnx.ModelProto) -> None:
    """Clip(x, lo[, hi]) before each HardSigmoid or HardSwish, at the input values where it saturates
    (`_bounds`; torch's HardSigmoid has alpha 1/6, beta 0.5: lo = -3, hi = 3).

    Exact in fp32 (the activation is constant beyond those points), and ORT removes the Clip into the
    producer's quantization range like a Relu, so the 256 levels of that tensor cover only values that
    change the output. A channel that never leaves the saturated side (mobilenet_v3_small's stem: one
    channel in [-329, -29] on calibration images, the others within +-20) otherwise sets the whole
    tensor's scale: 68 % vs 79 % validation top-1 in INT8 (fp32 100 %), measured on a 10-class student."""
    g = model.graph
    cons = _consumers(g)
    outputs = {o.name for o in g.output}
    nodes = []
    for n in g.node:
        nodes.append(n)
        for t in n.output:
            users = cons.get(t, [])
            bounds = None if t in outputs else _bounds(t, users)
            if bounds is None:
                continue
            names = [f"{t}_sat_{k}" for k in ("min", "max")[: len(bounds)]]
            g.initializer.extend(numpy_helper.from_array(np.float32(v), k) for v, k in zip(bounds, names))
            nodes.append(onnx.helper.make_node("Clip", [t, *names], [f"{t}_saturated"], name=f"{t}_saturate"))
            for c in users:
                c.input[:] = [f"{t}_saturated" if i == t else i for i in c.input]
    del g.node[:]
    g.node.extend(nodes)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (`<op>_<index>`): the exporter leaves the nodes of inlined
    functions (HardSwish -> HardSigmoid, Mul) unnamed, and `nodes_to_exclude` matches by name, so one
    empty name would keep every unnamed node fp32."""
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
            while n.name in taken:
                n.name += "_"
            taken.add(n.name)


FUSIONS: dict[str, Callable[[onnx.ModelProto], None]] = {"global_pool": _global_pool, "saturate": _saturate}


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
# (bench/results_int8_families.md has the defaults against ORT's default QDQ). Slower than quantizing
# everything: the first conv fp32 when it has 3 input channels (resnet18 b32 1.59x vs 2.19x), SE blocks fp32
# (efficientnet_b0 b32 1.18x vs 1.63x), depthwise convs fp32 (mobilenet_v2 b32 1.35x vs 1.88x), only Conv/Gemm
# quantized (mobilenet_v2 1.06x). The ReduceMean -> GlobalAveragePool rewrite gained most on SE families
# (efficientnet_b0 b1 1.27x vs 1.11x, mobilenet_v3_large b1 1.22x vs 1.09x). Per-tensor weights, SE Muls or
# depthwise fp32 on mobilenet_v3_small and shufflenet_v2_x0_5 stayed within run-to-run noise (+-10 %), so
# every family shares one recipe: ORT's op types, the pooling rewrite, the saturation clips (exact; they are
# for accuracy, not speed), a thin (K < 16) stem kept fp32.
_BASE = {"keep": ("thin_stem",), "fusions": ("global_pool", "saturate")}
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
