"""Per-epoch metric tracking: dvclive on the main rank, nothing elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


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
    """dvclive writer for a stage: `<dir>/metrics.json` (final values), `<dir>/plots/metrics/*.tsv`
    (x column `step` = the epoch, 1-based) and, given `params`, `<dir>/params.yaml`.

    `dvcyaml=None` keeps dvc.yaml hand-written; `save_dvc_exp=False` stops dvclive from creating
    experiments on its own. On resume the loop replays the saved history, so the directory is
    always written fresh (DVC deletes stage outputs before running the command anyway).
    Artifacts are not logged here: the models are DVC stage outputs, declared under `artifacts:`.
    """

    def __init__(self, directory: str | Path, params: dict[str, Any] | None = None) -> None:
        from dvclive import Live

        self.live = Live(str(directory), dvcyaml=None, save_dvc_exp=False, resume=False, report=None)
        if params:
            self.live.log_params(params)  # the model's resolved params block, beside its metrics

    def log_params(self, params: dict[str, Any]) -> None:
        self.live.log_params(params)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        # set the step explicitly and never call next_step(): it would leave step = epochs + 1 in the summary
        self.live.step = epoch
        for k, v in metrics.items():
            self.live.log_metric(k, v)
        self.live.make_summary()

    def close(self, final: dict[str, float]) -> None:
        self.live.summary.update(final)
        self.live.end()  # end() keeps summary["step"], the last logged epoch
