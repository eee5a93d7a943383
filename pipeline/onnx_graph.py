"""Small readers of an ONNX graph shared by the INT8 rewrites (pipeline.quant_fusions) and recipes
(pipeline.quant_recipes): who reads a tensor, node attributes, unique node names, and the stem block."""

from __future__ import annotations

import onnx

# Activations that ORT's fp32 Conv can fuse, applied by one node to the Conv's output
_UNARY = ("Relu", "Clip", "HardSwish", "LeakyRelu")


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def attr(n: onnx.NodeProto, name: str, default: float) -> float:
    """A float attribute of `n`, or `default` when the node does not set it."""
    return next((a.f for a in n.attribute if a.name == name), default)


def drop_unused(g: onnx.GraphProto) -> None:
    """Remove initializers no node reads any more (ORT warns about each)."""
    used = {t for n in g.node for t in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)


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


def first_conv(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The stem: the first Conv in graph order (which is topological), or None."""
    return next((n for n in graph.node if n.op_type == "Conv"), None)


def is_depthwise(n: onnx.NodeProto, dims: dict[str, list[int]]) -> bool:
    """A grouped Conv with one input channel per group (weight shape [C, 1, k, k], group > 1); `dims`:
    initializer name -> shape."""
    group = next((a.i for a in n.attribute if a.name == "group"), 1)
    return n.op_type == "Conv" and group > 1 and dims.get(n.input[1], [0, 0])[1] == 1


def activation(t: str, cons: dict[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto]:
    """The nodes that apply an activation to tensor `t` and nothing else reads: one unary op (Relu, Clip,
    HardSwish, LeakyRelu), or a gate g(t) with Mul(t, g(t)) (SiLU: Sigmoid; an inlined hardswish:
    HardSigmoid). Empty when `t` has no such activation."""
    users = cons.get(t, [])
    if len(users) == 1 and users[0].op_type in _UNARY:
        return users
    gate = [u for u in users if u.op_type in ("Sigmoid", "HardSigmoid")]
    mul = [u for u in users if u.op_type == "Mul"]
    if len(users) == 2 and len(gate) == len(mul) == 1 and set(mul[0].input) == {t, gate[0].output[0]}:
        return [gate[0], mul[0]]
    return []


def stem_block(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The first Conv with its activation and, when that activation's output is read only by a depthwise
    Conv (mobilenet, efficientnet), the depthwise Conv with its activation; [] without a Conv."""
    cons = consumers(graph)
    dims = {t.name: list(t.dims) for t in graph.initializer}
    first = first_conv(graph)
    if first is None:
        return []
    block = [first, *activation(first.output[0], cons)]
    users = cons.get(block[-1].output[0], [])
    if len(users) == 1 and is_depthwise(users[0], dims):
        block += [users[0], *activation(users[0].output[0], cons)]
    return block
