"""kdpipe's logging policy: one format on stderr, progress from rank 0 only, chatty libraries at WARNING.

Library modules only log; a command calls `configure` once (only stages configure output). No torch
import here, so `kdpipe predict` stays torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

# third-party loggers that flood INFO (DVC/dvclive internals, plotting, exporter passes, ORT shape inference)
NOISY = ("dvclive", "dvc", "matplotlib", "PIL", "onnxscript", "onnx_ir", "onnxruntime", "torch.onnx")


def launch_rank() -> int:
    """This process's rank as torchrun set it in the environment (0 outside torchrun), known before any
    process group."""
    return int(os.environ.get("RANK", 0))


def configure(verbose: bool = False) -> None:
    """INFO (DEBUG if `verbose`) on rank 0, WARNING on the other ranks; NOISY loggers at WARNING."""
    level = logging.DEBUG if verbose else logging.INFO
    if launch_rank() > 0:
        level = logging.WARNING  # under torchrun only rank 0 reports progress
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of chatty third-party loggers for a block (libraries that reset their own levels on
    import)."""
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)
