"""Per-epoch metric tracking: dvclive on the main rank, nothing elsewhere."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def close(self, final: dict[str, float]) -> None: ...


class NullTracker:
    """Tracks nothing (non-main DDP ranks, unit tests)."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def close(self, final: dict[str, float]) -> None:
        pass


class LiveTracker:
    """dvclive writer for a stage: `<dir>/metrics.json` (final values) and `<dir>/plots/metrics/*.tsv`.

    `dvcyaml=None` keeps dvc.yaml hand-written; `save_dvc_exp=False` stops dvclive from creating
    experiments on its own. On resume the loop replays the saved history, so the directory is
    always written fresh (DVC deletes stage outputs before running the command anyway).
    """

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        self.live = Live(str(directory), dvcyaml=None, save_dvc_exp=False, resume=False, report=None)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.live.step = epoch
        for k, v in metrics.items():
            self.live.log_metric(k, v)
        self.live.next_step()

    def close(self, final: dict[str, float]) -> None:
        self.live.summary.update({k: v for k, v in final.items()})
        self.live.make_summary()
        self.live.end()
