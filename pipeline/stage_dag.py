"""Run a dvc.yaml's stage commands several at a time, in dependency order, for `dvc commit` to record.

`dvc repro` runs one stage at a time. A study's models are independent jobs of one thread each
(base.threads: 1), so on an n-core machine n of them can train at once. A stage runs after every stage that
writes one of its deps (the order DVC uses); `run_stages` keeps `jobs` commands running, starting each stage
once its producers are done, and stops starting new ones at the first failure; the caller then records the
finished stages with `dvc commit` so that `dvc repro` finds them up to date.
"""

from __future__ import annotations

import logging
import subprocess
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from pipeline.errors import KdpipeError

log = logging.getLogger(__name__)


def _paths(entries: list) -> list[str]:
    """Paths of a stage's deps/outs list (plain strings or {path: options} mappings)."""
    return [p for e in entries for p in ([e] if isinstance(e, str) else e)]


def _under(a: str, b: str) -> bool:
    """a and b are the same path or one contains the other (a folder dep holds a stage's out)."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _after(stages: dict[str, dict]) -> dict[str, set[str]]:
    """For each stage, the stages that write one of its deps."""
    outs = {n: _paths(s.get("outs", [])) + _paths(s.get("metrics", [])) for n, s in stages.items()}
    return {
        n: {
            m
            for m in stages
            if m != n and any(_under(d, o) for d in _paths(s.get("deps", [])) for o in outs[m])
        }
        for n, s in stages.items()
    }


def downstream(stages: dict[str, dict], changed: set[str]) -> set[str]:
    """`changed` and every stage that depends on one of them, directly or not (they will change too)."""
    after, out = _after(stages), set(changed) & set(stages)
    while grown := {n for n in stages if n not in out and after[n] & out}:
        out |= grown
    return out


def levels(stages: dict[str, dict]) -> list[list[str]]:
    """Stage names grouped so every stage comes after the stages whose outputs it depends on (among
    `stages`; a dep no stage here writes is taken as present)."""
    after = _after(stages)
    done: set[str] = set()
    out: list[list[str]] = []
    while len(done) < len(stages):
        ready = sorted(n for n in stages if n not in done and after[n] <= done)
        if not ready:
            raise KdpipeError(f"dvc.yaml has a dependency cycle among {sorted(set(stages) - done)}")
        out.append(ready)
        done |= set(ready)
    return out


def run_stages(stages: dict[str, dict], jobs: int, root: Path, logs: Path) -> list[str]:
    """Run every stage's cmd in `root`, `jobs` at a time, each as soon as the stages it depends on have
    finished (those with the most dependants first: teachers before students); each stage's output goes
    to logs/<stage>.log. Returns the stages run, in finishing order; after a failure no new stage starts,
    the running ones finish, and the error names the failed stage and its log."""
    levels(stages)  # refuses a cycle before anything runs
    logs.mkdir(parents=True, exist_ok=True)
    after = _after(stages)
    weight = {n: sum(n in a for a in after.values()) for n in stages}

    def run(name: str) -> int:
        log.info("start %s", name)
        with open(logs / f"{name}.log", "w") as f:
            return subprocess.run(stages[name]["cmd"], shell=True, cwd=root, stdout=f, stderr=f).returncode

    done: list[str] = []
    failed: list[str] = []
    running: dict = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while True:
            started = set(done) | set(failed) | set(running.values())
            ready = [n for n in stages if n not in started and after[n] <= set(done)]
            for n in (
                sorted(ready, key=lambda n: (-weight[n], n))[: jobs - len(running)] if not failed else []
            ):
                running[pool.submit(run, n)] = n
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                (done if fut.result() == 0 else failed).append(name)
    if failed:
        tail = (logs / f"{failed[0]}.log").read_text().strip().splitlines()[-1:] or [""]
        raise KdpipeError(
            f"stage {failed[0]} failed ({tail[0]}); see {logs / failed[0]}.log, fix it and re-run "
            f"(finished stages resume in seconds){f'; also failed: {failed[1:]}' if failed[1:] else ''}"
        )
    if len(done) < len(stages):
        raise KdpipeError(f"stages never became ready: {sorted(set(stages) - set(done))}")
    return done
