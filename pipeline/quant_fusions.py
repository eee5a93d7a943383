"""Exact fp32 graph rewrites applied before INT8 quantization (`FUSIONS`, named by a recipe's `fusions`);
the graph readers they share with the recipes are in pipeline.onnx_graph.

Each rewrite computes the same function in fp32 (tests compare the logits); what changes is which ops
ONNX Runtime can run on integers and how the 256 levels of each tensor are spent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.onnx_graph import attr, consumers, drop_unused, name_nodes, stem_block


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
    drop_unused(g)  # the axes tensors


def _bounds(t: str, users: list[onnx.NodeProto]) -> list[float] | None:
    """[lo] or [lo, hi] beyond which every user of tensor `t` is constant, or None: one HardSigmoid h
    (lo = -beta/alpha, hi = (1 - beta)/alpha) with, at most, the Muls t * h(t) of an inlined HardSwish
    (then no hi)."""
    hs = [c for c in users if c.op_type == "HardSigmoid"]
    rest = [c for c in users if c.op_type != "HardSigmoid"]
    if len(hs) != 1 or not all(c.op_type == "Mul" and set(c.input) == {t, hs[0].output[0]} for c in rest):
        return None  # t also feeds something that sees values beyond the saturation points
    alpha, beta = attr(hs[0], "alpha", 0.2), attr(hs[0], "beta", 0.5)
    return [-beta / alpha] + ([] if rest else [(1 - beta) / alpha])


def _saturate(model: onnx.ModelProto) -> None:
    """Clip(x, lo[, hi]) before each HardSigmoid, alone or in an inlined hardswish, at the input values where
    it saturates (`_bounds`; torch's HardSigmoid has alpha 1/6, beta 0.5: lo = -3, hi = 3). HardSwish nodes
    are left alone: only `_stem_hardswish` makes them, in the stem block that stays fp32.

    Exact in fp32 (the activation is constant beyond those points), and ORT removes the Clip into the
    producer's quantization range like a Relu, so the 256 levels of that tensor cover only values that
    change the output. A channel that never leaves the saturated side (mobilenet_v3_small's stem: one
    channel in [-329, -29] on calibration images, the others within +-20) otherwise sets the whole
    tensor's scale: 68 % vs 79 % validation top-1 in INT8 (fp32 100 %), measured on a 10-class student."""
    g = model.graph
    cons = consumers(g)
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


def _input_scale(model: onnx.ModelProto) -> None:
    """Div(x, s) or Mul(x, k) by a constant per channel (shape [1, C, 1, 1], [C, 1, 1] or one value) whose
    only user is a Conv -> the Conv's weights scaled along their input channels and the Div / Mul dropped:
    conv(x / s) = conv_{W / s}(x), zero padding stays zero. The exported normalisation (x - mean) / std
    ends in such a Div, so the INT8 model makes one fp32 pass fewer over the input (the Sub stays: zero
    padding of x - mean is not zero padding of x). Exact up to fp32 rounding."""
    g = model.graph
    weights = {t.name: t for t in g.initializer}
    cons = consumers(g)
    outputs = {o.name for o in g.output}
    for n in list(g.node):
        if n.op_type not in ("Div", "Mul") or n.input[1] not in weights or n.output[0] in outputs:
            continue
        users = cons.get(n.output[0], [])
        conv = users[0] if len(users) == 1 else None
        if conv is None or conv.op_type != "Conv" or list(conv.input[:1]) != [n.output[0]]:
            continue
        w = weights.get(conv.input[1])
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if w is None or len(cons.get(w.name, [])) != 1 or group != 1 or len(w.dims) != 4:
            continue  # shared or grouped weights: leave the graph as it is
        k = numpy_helper.to_array(weights[n.input[1]]).astype(np.float32)
        c = w.dims[1]
        per_channel = k.ndim >= 3 and k.shape[-3:] == (c, 1, 1) and all(d == 1 for d in k.shape[:-3])
        if k.size != 1 and not per_channel:
            continue  # a [C] tensor would broadcast along W, not along channels
        k = k.reshape(1, -1, 1, 1) if per_channel else k.reshape(())
        arr = numpy_helper.to_array(w)
        arr = arr / k if n.op_type == "Div" else arr * k
        w.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), w.name))
        conv.input[0] = n.input[0]
        g.node.remove(n)
    drop_unused(g)  # the folded std


# Ops through which a pending scale factor passes unchanged: linear in their data input (input 0), or
# positively homogeneous (Relu, MaxPool: f(a * x) = a * f(x) for a > 0).
_CARRY = {
    "GlobalAveragePool", "ReduceMean", "AveragePool", "MaxPool", "Relu", "Flatten", "Reshape", "Transpose",
    "Identity", "Squeeze", "Unsqueeze",
}  # fmt: skip


def _const(g: onnx.GraphProto, name: str, value: float) -> str:
    g.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return name


def _hard_sigmoid(model: onnx.ModelProto) -> None:
    """HardSigmoid(t) = clip(a * t + b, 0, 1) = a * clip(t + b / a, 0, 1 / a) -> Add + Clip, with the factor
    a (1/6 for torch) moved into the next Conv / Gemm weights.

    ORT has no integer HardSigmoid: a hardswish t * HardSigmoid(t) in INT8 costs a DequantizeLinear, the
    fp32 HardSigmoid, a QuantizeLinear and a QLinearMul. Add(t, 3) -> Clip(0, 6) runs as one QLinearAdd
    (the Clip becomes its output range), so the hardswish is QLinearAdd + QLinearMul: 0.35 vs 0.88 ms on a
    [32, 16, 48, 48] tensor, 1 thread. The stored tensor is then 1/a times the true one; the factor rides
    through Mul (factors multiply) and `_CARRY` ops to a Conv / Gemm / MatMul whose weight initializer
    absorbs it (W * a: conv and matmul are linear, zero padding stays zero), or, anywhere else, an explicit
    Mul by a restores the true value. Exact up to fp32 rounding."""
    g = model.graph
    weights = {t.name: t for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    factor: dict[str, float] = {}  # tensor -> a: its true value is a * the stored value
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        scaled = [i for i in n.input if factor.get(i, 1.0) != 1.0]
        if n.op_type == "HardSigmoid" and not scaled:
            a, b = attr(n, "alpha", 0.2), attr(n, "beta", 0.5)
            t, out = n.input[0], n.output[0]
            shift, top = _const(g, f"{out}_shift", b / a), _const(g, f"{out}_top", 1.0 / a)
            zero = _const(g, f"{out}_zero", 0.0)
            nodes += [
                onnx.helper.make_node("Add", [t, shift], [f"{out}_shifted"], name=f"{n.name}_add"),
                onnx.helper.make_node("Clip", [f"{out}_shifted", zero, top], [out], name=f"{n.name}_clip"),
            ]
            factor[out] = a
        elif not scaled:
            nodes.append(n)
        elif n.op_type == "Mul":
            nodes.append(n)
            factor[n.output[0]] = float(np.prod([factor.get(i, 1.0) for i in n.input]))
        elif n.op_type in _CARRY and scaled == [n.input[0]]:
            nodes.append(n)
            factor[n.output[0]] = factor[n.input[0]]
        elif (
            n.op_type in ("Conv", "Gemm", "MatMul")
            and scaled == [n.input[0]]
            and n.input[1] in weights
            and not (n.op_type == "Gemm" and next((a.i for a in n.attribute if a.name == "transA"), 0))
        ):
            w = weights[n.input[1]]
            shared = uses[w.name] > 1  # shared weights: this node gets its own scaled copy
            name = f"{w.name}_{n.name}_scaled" if shared else w.name
            arr = numpy_helper.to_array(w) * np.float32(factor[n.input[0]])  # float32 stays float32
            scaled_w = numpy_helper.from_array(arr, name)
            if shared:
                g.initializer.append(scaled_w)
                n.input[1] = name
            else:
                w.CopyFrom(scaled_w)
            nodes.append(n)
        else:  # any other op sees the true values
            for k, i in enumerate(n.input):
                if factor.get(i, 1.0) != 1.0:
                    f = _const(g, f"{i}_{n.name}_factor", factor[i])
                    nodes.append(onnx.helper.make_node("Mul", [i, f], [f"{i}_{n.name}_true"]))
                    n.input[k] = f"{i}_{n.name}_true"
            nodes.append(n)
    for o in g.output:  # a graph output keeps its name and its true values
        if factor.get(o.name, 1.0) != 1.0:
            stored = f"{o.name}_stored"
            for n in nodes:
                n.output[:] = [stored if t == o.name else t for t in n.output]
                n.input[:] = [stored if t == o.name else t for t in n.input]
            f = _const(g, f"{o.name}_factor", factor[o.name])
            nodes.append(onnx.helper.make_node("Mul", [stored, f], [o.name], name=f"{o.name}_restore"))
    del g.node[:]
    g.node.extend(nodes)
    name_nodes(model)


def _stem_hardswish(model: onnx.ModelProto) -> None:
    """The inlined hardswishes t * HardSigmoid(t) (alpha 1/6, beta 1/2) of the stem block
    (`onnx_graph.stem_block`) -> one HardSwish node each, which ORT's fp32 Conv fuses.

    For recipes that keep the stem block fp32 (`stem_block` keep rule): there the hardswish of
    mobilenet_v3's stem would otherwise run as separate fp32 passes over its largest tensor. Exact:
    HardSwish(t) = t * clip(t / 6 + 1/2, 0, 1)."""
    g = model.graph
    block = stem_block(g)
    gates = set()
    for gate, mul in zip(block, block[1:]):
        a, b = attr(gate, "alpha", 0.2), attr(gate, "beta", 0.5)
        if gate.op_type == "HardSigmoid" and mul.op_type == "Mul" and abs(a - 1 / 6) < 1e-6 and b == 0.5:
            mul.op_type = "HardSwish"
            mul.input[:] = [gate.input[0]]
            gates.add(gate.name)
    kept = [n for n in g.node if n.name not in gates]
    del g.node[:]
    g.node.extend(kept)


FUSIONS: dict[str, Callable[[onnx.ModelProto], None]] = {
    "global_pool": _global_pool,
    "saturate": _saturate,
    "hard_sigmoid": _hard_sigmoid,
    "input_scale": _input_scale,
    "stem_hardswish": _stem_hardswish,
}
