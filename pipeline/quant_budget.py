"""INT8 within an accuracy budget: rank nodes by the error they add, keep the worst ones fp32.

`node_errors` runs the pre-processed fp32 graph and the INT8 (QDQ) graph on the same calibration
images with every activation exposed as an output, and gives each quantized node the relative error
it *adds*: err(output) - max err(inputs), err(t) = ||t_int8 - t_fp32||^2 / ||t_fp32||^2, t_int8 read
after its DequantizeLinear. The cumulative error alone would rank the last layers first. That
simulation cannot see the integer kernels' own error, so `kernel_gains` measures, with ORT's optimized
kernels, how much of the INT8 logit error goes away when one Conv/Gemm runs in fp32; nodes that remove
at least KERNEL_GAIN of it come first in the ranking (`_ranking`).

`quantize_within_budget` quantizes with the recipe, measures the top-1 drop on the *validation*
split, and while the drop exceeds `max_drop` points keeps the next node of that ranking (computed
once, on the first INT8 model) fp32 together with every node that shares a tensor with it (`_unit`):
a tensor carries a Q/DQ pair when any node touching it is quantized.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from pipeline.predict import INPUT, make_session, run_logits
from pipeline.quantize import ImageReader, Recipe, preprocess, quantize_int8

log = logging.getLogger(__name__)
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.add(name=n)  # untyped outputs are allowed by ORT
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as it is
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _dq_map(q: onnx.ModelProto, fp32_names: set[str]) -> dict[str, str]:
    """Activation tensor (the fp32 graph's name) -> the DequantizeLinear output its consumers read in the QDQ
    graph. A graph output keeps its name on the DQ side, so ORT renames the producer's output
    `<name>_QuantizeLinear_Input`: that suffix is mapped back."""
    init = {t.name for t in q.graph.initializer}
    q_of = {
        n.output[0]: n.input[0]
        for n in q.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in init
    }
    out: dict[str, str] = {}
    for n in q.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in q_of:
            t = q_of[n.input[0]]
            t = t.removesuffix("_QuantizeLinear_Input") if t not in fp32_names else t
            if t in fp32_names:
                out.setdefault(t, n.output[0])
    return out


def node_errors(pre_fp32: str | Path, int8: str | Path, images: np.ndarray) -> dict[str, float]:
    """{node name: relative error it adds} for the quantized nodes of `int8`, on float32 `images` in [0,
    1]."""
    q, f = onnx.load(str(int8)), onnx.load(str(pre_fp32))
    names = {o for n in f.graph.node for o in n.output} | {i.name for i in f.graph.input}
    dq = _dq_map(q, names)
    back = {v: k for k, v in dq.items()}
    tensors = sorted(dq)
    ref = dict(zip(tensors, _with_outputs(f, tensors).run(tensors, {INPUT: images})))
    got = dict(
        zip(
            tensors, _with_outputs(q, [dq[t] for t in tensors]).run([dq[t] for t in tensors], {INPUT: images})
        )
    )
    err = {t: float(np.sum((got[t] - ref[t]) ** 2) / max(float(np.sum(ref[t] ** 2)), 1e-30)) for t in tensors}
    out = {}
    for n in q.graph.node:
        t = n.output[0].removesuffix("_QuantizeLinear_Input") if n.output else ""
        if n.op_type in QDQ or t not in err:
            continue
        ins = [err[back[i]] for i in n.input if i in back]
        out[n.name] = err[t] - max(ins, default=0.0)
    return out


def _dequantized(q: onnx.ModelProto, dq: onnx.NodeProto) -> np.ndarray:
    """The fp32 values of a DequantizeLinear over initializers: (x - zero_point) * scale along its axis."""
    init = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer if t.name in dq.input}
    x, scale = init[dq.input[0]].astype(np.float32), init[dq.input[1]].astype(np.float32)
    zp = init[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % x.ndim
    shape = [-1 if d == axis else 1 for d in range(x.ndim)] if scale.ndim else []
    return (x - zp.reshape(shape)) * scale.reshape(shape)


def kernel_gains(fp32: str | Path, int8: str | Path, images: np.ndarray, tmp: Path) -> dict[str, float]:
    """{Conv/Gemm/MatMul node: share of the INT8 model's logit error that goes away when only that node runs
    in fp32 on fp32 inputs}, measured with ONNX Runtime's optimized (integer) kernels on float32 `images`.

    The simulated ranking (`node_errors`) runs Q/DQ in float and cannot see the kernels' own error: on x86
    CPUs without VNNI the U8S8 kernels add pairs of u8 x s8 products in int16, which saturates when both
    are large (a bright image through an RGB stem: 79 % vs 99 % validation top-1 on a mobilenet_v3_small
    student whose Q/DQ simulation is 99 %). In the variant every DequantizeLinear input of the node is
    replaced by the fp32 tensor (activation) or the dequantized constant (weight, bias): with no DQ input
    ORT cannot fuse it into an integer kernel (a DQ input with an fp32 weight is re-quantized)."""
    q = onnx.load(str(int8))
    ref = run_logits(make_session(fp32, 1)[0], images)

    def err(model: onnx.ModelProto) -> float:
        onnx.save(model, str(tmp / "variant.onnx"))
        z = run_logits(make_session(tmp / "variant.onnx", 1)[0], images)
        return float(np.sum((z - ref) ** 2) / max(float(np.sum(ref**2)), 1e-30))

    consts = {t.name for t in q.graph.initializer}
    made = {o: n for n in q.graph.node for o in n.output}
    base, gains = err(q), {}
    for k, n in enumerate(q.graph.node):
        dqs = [made[i] for i in n.input if i in made and made[i].op_type == "DequantizeLinear"]
        if n.op_type not in ("Conv", "Gemm", "MatMul") or not dqs:
            continue
        m = onnx.ModelProto()
        m.CopyFrom(q)
        for dq in dqs:
            if dq.input[0] in consts:
                t = numpy_helper.from_array(_dequantized(q, dq), f"{dq.output[0]}_fp32")
                m.graph.initializer.append(t)
                fp32_in = t.name
            else:  # the QuantizeLinear's own input: the tensor before rounding
                fp32_in = made[dq.input[0]].input[0]
            m.graph.node[k].input[:] = [fp32_in if x == dq.output[0] else x for x in m.graph.node[k].input]
        gains[n.name] = (base - err(m)) / max(base, 1e-30)
    return gains


def _unit(graph: onnx.GraphProto, name: str) -> list[str]:
    """`name` and every node that shares an activation tensor with it in the fp32 `graph`: the producers of
    its inputs and all consumers of its inputs and outputs. ORT gives a tensor one Q/DQ pair when any node
    touching it is quantized and feeds every consumer the dequantized copy, so only when all of them stay
    fp32 does `name` read and write exact values."""
    init = {t.name for t in graph.initializer}
    prod = {o: n.name for n in graph.node for o in n.output}
    users: dict[str, list[str]] = {}
    for n in graph.node:
        for t in n.input:
            users.setdefault(t, []).append(n.name)
    node = next(n for n in graph.node if n.name == name)
    unit = [name]
    for t in [*node.input, *node.output]:
        if t and t not in init:
            unit += [m for m in [prod.get(t), *users.get(t, [])] if m and m not in unit]
    return unit


KERNEL_GAIN = 0.05  # a Conv/Gemm whose fp32 run removes >= 5 % of the INT8 logit error is tried first


def _ranking(pre: Path, int8: Path, probe: np.ndarray, tmp: Path) -> list[tuple[str, float, str]]:
    """Fallback order: weight nodes whose integer kernels add error (`kernel_gains` >= KERNEL_GAIN, largest
    first), then every quantized node by the error it adds in the Q/DQ simulation (`node_errors`)."""
    gains = kernel_gains(pre, int8, probe, tmp)
    first = sorted(((g, k) for k, g in gains.items() if g >= KERNEL_GAIN), key=lambda gk: (-gk[0], gk[1]))
    added = sorted(node_errors(pre, int8, probe).items(), key=lambda kv: (-kv[1], kv[0]))
    return [(k, g, "kernel") for g, k in first] + [(k, e, "added_error") for k, e in added]


def _val_drop(fp32_top1: float, path: Path, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Top-1 drop in points (100 x fraction) of the INT8 file against the fp32 top-1 on the same images."""
    z = run_logits(make_session(path, 1)[0], val_x)
    return 100 * (fp32_top1 - float((z.argmax(1) == val_y).mean()))


def quantize_within_budget(
    fp32_path: str | Path,
    out_path: str | Path,
    calib_u8: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    recipe: Recipe,
    max_drop: float,
    max_tries: int,
    n: int = 512,
    probe_images: int = 32,
    plain_path: str | Path | None = None,
    **quant_kw,
) -> dict:
    """INT8 of `fp32_path` at `out_path` whose validation top-1 drop is <= `max_drop` points if `max_tries`
    fallback steps allow it; otherwise the try with the smallest drop (fewest fp32 nodes on ties).

    `val_x`: float32 [0, 1] validation images, `val_y` labels (never the test split). `plain_path`: where to
    keep a copy of the recipe's INT8 model before any fallback (to time the fallback's cost). Returns
    quantize_int8's info plus `val_drop_points`, `within_budget`, `fallback` (tries, the nodes each one added,
    their drops).
    """
    info = quantize_int8(fp32_path, out_path, calib_u8, n=n, recipe=recipe, **quant_kw)
    if len(val_y) == 0:  # nothing to measure the budget on: say so once, record it as unknown
        log.warning(
            "no validation split (data.val_size = 0): the INT8 top-1 budget export.int8_max_drop is not "
            "checked"
        )
        if plain_path is not None:
            shutil.copyfile(out_path, plain_path)
        return info | {
            "val_drop_points": None,
            "val_fp32_top1": None,
            "val_images": 0,
            "within_budget": None,
            "max_drop_points": max_drop,
            "fallback": {"tries": 0, "steps": []},
        }
    fp32_top1 = float((run_logits(make_session(fp32_path, 1)[0], val_x).argmax(1) == val_y).mean())
    drop = _val_drop(fp32_top1, Path(out_path), val_x, val_y)
    if plain_path is not None:
        shutil.copyfile(out_path, plain_path)
    tries = [{"added": [], "val_drop_points": drop}]
    best = (drop, 0, info)
    if drop > max_drop and max_tries > 0:
        with tempfile.TemporaryDirectory(prefix="kdpipe-budget-") as tmp:
            pre, cand, best_path = Path(tmp) / "pre.onnx", Path(tmp) / "try.onnx", Path(tmp) / "best.onnx"
            shutil.copyfile(out_path, best_path)
            preprocess(fp32_path, pre, recipe.fusions)
            probe_u8 = ImageReader(calib_u8, min(probe_images, n), seed=1).x
            probe = probe_u8.astype(np.float32) / np.float32(255.0)
            fp32_graph = onnx.load(str(pre)).graph
            ranking = _ranking(pre, Path(out_path), probe, Path(tmp))
            extra: list[str] = []
            for name, score, kind in ranking:
                if len(tries) > max_tries or drop <= max_drop:
                    break
                if name in extra or name in info["fp32_nodes"]:
                    continue
                added = [u for u in _unit(fp32_graph, name) if u not in extra]
                extra += added
                cinfo = quantize_int8(
                    fp32_path, cand, calib_u8, n=n, recipe=recipe, exclude=extra, **quant_kw
                )
                drop = _val_drop(fp32_top1, cand, val_x, val_y)
                tries.append({"added": added, "score": score, "ranked_by": kind, "val_drop_points": drop})
                log.info(
                    "INT8 fallback: %s kept fp32 (%s score %.3g): validation drop %.2f points",
                    name,
                    kind,
                    score,
                    drop,
                )
                if (drop, len(extra)) < best[:2]:
                    best = (drop, len(extra), cinfo)
                    shutil.copyfile(cand, best_path)
            shutil.copyfile(best_path, out_path)
    drop, _, info = best
    within = drop <= max_drop
    if not within:
        log.warning(
            "INT8 top-1 drop %.2f points on the validation split exceeds export.int8_max_drop=%g after %d "
            "fallback tries; kept the best try (raise export.int8_max_tries or the budget)",
            drop,
            max_drop,
            len(tries) - 1,
        )
    return info | {
        "val_drop_points": drop,
        "val_fp32_top1": fp32_top1,
        "val_images": len(val_y),
        "within_budget": within,
        "max_drop_points": max_drop,
        "fallback": {"tries": len(tries) - 1, "steps": tries},
    }
