"""What identifies a job's run and what it leaves: the fingerprint that gates resuming, the files it read,
and its ONE artifact (plus a knowledge job's extra files)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pipeline import checkpoint
from pipeline.codedeps import ROOT, code_files
from pipeline.job_inputs import data_digest, data_facts, make_loader
from pipeline.job_spec import EVAL_BATCH, Job
from pipeline.methods import REGISTRY
from pipeline.params import BaseParams


def _flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in metrics.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def fingerprint(job: Job, base: BaseParams, data: dict, files: list[str]) -> str:
    """A short hash of exactly what changes the result: the job's resolved params and seed, the data, the
    sha256 of the files it reads (teachers, cached targets, used knowledge) and of the code it runs
    (`code_files`)."""
    code = hashlib.sha256()
    for f in code_files(job.method, job.args):
        code.update(f.encode() + b"\0" + (ROOT / f).read_bytes())
    parts = [job.kind, job.params, base.seed, job.seed, data_digest(data), files, code.hexdigest()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def used_hashes(job: Job) -> list[str]:
    """sha256 of every file `job` reads besides the data, in `used_files` order (teachers first)."""
    return [checkpoint.sha256(p) for p in used_files(job)]


def used_files(job: Job) -> list[Path]:
    assets = [job.assets.get(k) for k in REGISTRY[job.method].uses_assets]
    flat = [a for v in assets for a in (v if isinstance(v, list) else [v])]
    init = [Path(job.init.path)] if job.init is not None else []
    return (
        [t.path for t in job.teachers]
        + init
        + list(job.targets or [])
        + [Path(a) for a in flat if isinstance(a, (str, Path)) and Path(a).is_file()]
    )


def save_outputs(
    job: Job, method: Any, final: dict, data: dict, artifact: Path, device: torch.device
) -> dict:
    """Write the job's ONE artifact (and a knowledge job's extra files next to it); returns the job's
    metrics."""

    def beside(suffix: str) -> Path:
        return artifact.with_name(f"{artifact.stem}{suffix}.pt") if suffix else artifact

    if not REGISTRY[job.method].job:
        for suffix, net in method.exported().items():  # DML peers: <name>_peer1.pt next to <name>.pt
            checkpoint.save(
                checkpoint.make_artifact(
                    net,
                    kind=job.kind,
                    name=job.name + suffix,
                    arch=job.arch,
                    arch_kwargs=job.arch_kwargs,
                    mean=data["mean"],
                    std=data["std"],
                    class_names=data["class_names"],
                    params=job.params,
                    metrics=final,
                    **data_facts(data),
                ),
                beside(suffix),
            )
        return dict(final)
    out = method.outputs(lambda s: make_loader(data, s, batch_size=EVAL_BATCH, device=device), final)
    checkpoint.save(
        checkpoint.make_artifact(
            kind=job.kind,
            name=job.name,
            params=job.params,
            metrics=_flat(out.metrics),
            class_names=list(data["class_names"]),
            **out.fields,
        ),
        artifact,
    )
    for suffix, obj in out.extras.items():  # tied to the artifact by its hash
        checkpoint.save(obj | {f"{job.kind}_sha256": checkpoint.sha256(artifact)}, beside(suffix))
    return out.metrics
