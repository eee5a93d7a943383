"""kdpipe's ONNX metadata (`metadata_props`) and the removal of local source paths from a graph."""

from __future__ import annotations

import json
import re

import onnx

from pipeline import __version__
from pipeline.predict import META_FORMAT


def build_metadata(art: dict, source_sha256: str) -> dict[str, str]:
    """kdpipe metadata_props (strings; lists as JSON) from a model artifact."""
    return {
        "kdpipe_format": META_FORMAT,
        "name": str(art.get("name", "")),
        "arch": str(art["arch"]),
        "class_names": json.dumps(list(art["class_names"])),
        "input_size": str(int(art["input_size"])),
        "in_channels": str(int(art["in_channels"])),
        "mean": json.dumps([float(m) for m in art["mean"]]),
        "std": json.dumps([float(s) for s in art["std"]]),
        "input_range": "[0, 1] float32 NCHW; normalisation is inside the graph",
        "source_sha256": source_sha256,
        "kdpipe_version": __version__,
    }


def set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


# A source location as exporters write it: `File "/abs/x.py", line 3`, or any path to a .py file.
SOURCE_REF = re.compile(r'File "|[\\/][^\s"\']*\.py\b')


def _graphs(model: onnx.ModelProto):
    """Every graph of `model`: the main one, subgraphs of control-flow nodes, and function bodies."""
    todo = [model.graph] + list(model.functions)
    while todo:
        g = todo.pop()
        yield g
        for n in g.node:
            todo += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
            todo += [sub for a in n.attribute if a.type == onnx.AttributeProto.GRAPHS for sub in a.graphs]


def strip_source_refs(model: onnx.ModelProto) -> int:
    """Drop node doc_strings and node metadata_props that name source files (the exporter's stack traces
    carry the absolute paths of the exporting checkout); model-level metadata (ours) is kept.
    Returns how many entries were removed. The file then depends on the model only, not on where it was
    made."""
    removed = 0
    for g in _graphs(model):
        if SOURCE_REF.search(g.doc_string):
            g.doc_string, removed = "", removed + 1
        for n in getattr(g, "node", []):
            if n.doc_string:
                n.doc_string, removed = "", removed + 1
            bad = [p for p in n.metadata_props if SOURCE_REF.search(p.value)]
            for p in bad:
                n.metadata_props.remove(p)
            removed += len(bad)
    if SOURCE_REF.search(model.doc_string):
        model.doc_string, removed = "", removed + 1
    return removed
