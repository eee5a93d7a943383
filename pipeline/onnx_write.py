"""Writing one ONNX file: a model wrapped in its normalisation, exported, stamped and checked.

The graph follows kdpipe's ONNX contract: input `image`, float32 NCHW in [0, 1] with the data set's
normalisation inside the graph (`Normalized`), dynamic batch axis, output `logits`, one self-contained
file, and kdpipe `metadata_props` (`pipeline.onnx_meta.build_metadata`). No local path is left in the
file, so the same model gives the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from pipeline.errors import KdpipeError
from pipeline.logs import NOISY, quiet_loggers
from pipeline.onnx_meta import build_metadata, set_metadata, strip_source_refs
from pipeline.predict import INPUT, OUTPUT, check_onnx

log = logging.getLogger(__name__)

# torch.export specialises a dimension whose example size is 0 or 1 to that constant, so a batch-1
# example would bake batch=1 into the graph despite `dynamic_shapes`; 2 is the smallest safe size.
EXAMPLE_BATCH = 2


class Normalized(nn.Module):
    """`image` in [0, 1] -> (image - mean) / std -> student -> logits; mean/std per channel."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)


def _run_exporter(wrapped: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    """torch.onnx.export with the batch axis dynamic: `dynamo` (torch.export: dynamic_shapes, one file) or
    the TorchScript tracer (dynamic_axes, constant folding)."""
    if dynamo:
        kw = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},), "external_data": False}
    else:
        kw = {"dynamic_axes": {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, "do_constant_folding": True}
    # dynamo prints "[torch.onnx] ..." progress lines to stdout (swallowed so stage output stays clean); the
    # tracer warns that it is deprecated (chosen knowingly: a fallback says so in the log, select-student
    # times with it) and about shape-dependent branches, which the fixed example resolves
    with contextlib.redirect_stdout(io.StringIO()), quiet_loggers(*NOISY), warnings.catch_warnings():
        if not dynamo:
            warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamo=dynamo,
            opset_version=opset,
            **kw,
        )


def export_onnx(
    model: nn.Module,
    art: dict,
    source_sha256: str,
    path: str | Path,
    opset: int = 18,
    fallback: bool = True,
    exporter: str = "dynamo",
) -> str:
    """Export `model` (eval, CPU) wrapped in `Normalized` to `path`; returns the exporter used.

    Exporter: the dynamo exporter (`torch.export`; the default since torch 2.9, where the TorchScript
    one is deprecated) with `dynamic_shapes` on the batch axis only, `external_data=False` (one
    self-contained file instead of .onnx + .onnx.data) and an example batch of EXAMPLE_BATCH=2 (a
    batch of 1 would be specialised to a constant). If it fails for some architecture and `fallback`
    is set, the legacy TorchScript exporter is used with a WARNING in the log and "legacy" in the
    returned name (recorded in metrics.json); never silently. `exporter="legacy"` asks for the
    TorchScript exporter outright (select-student: 0.2 s a model instead of 5-15 s).
    `path` is written directly: callers pass a temporary name (checkpoint.atomic_path).
    """
    path = Path(path)
    wrapped = Normalized(model.cpu().eval(), art["mean"], art["std"]).eval()
    c, s = int(art["in_channels"]), int(art["input_size"])
    example = torch.rand(EXAMPLE_BATCH, c, s, s, generator=torch.Generator().manual_seed(0))
    if exporter == "legacy":
        _run_exporter(wrapped, example, path, opset, dynamo=False)
    else:
        try:
            _run_exporter(wrapped, example, path, opset, dynamo=True)
        except Exception as e:  # noqa: BLE001 - torch.export raises many types; the message is what matters
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if not fallback:
                raise KdpipeError(
                    f"dynamo ONNX export of arch {art['arch']!r} failed ({why}); allow the legacy exporter "
                    "or change the arch"
                ) from None
            log.warning(
                "dynamo ONNX export of arch %r failed (%s); FALLING BACK to the legacy TorchScript exporter",
                art["arch"],
                why,
            )
            exporter = "legacy"
            _run_exporter(wrapped, example, path, opset, dynamo=False)
    proto = onnx.load(str(path))
    strip_source_refs(proto)
    set_metadata(proto, build_metadata(art, source_sha256))
    check_onnx(
        proto,
        f"{path}: the exported model fails the ONNX checker",
        "try another opset (export.opset) or report the arch",
    )
    onnx.save(proto, str(path))
    return exporter
