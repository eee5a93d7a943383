"""Shared fixtures: tiny synthetic data and tiny model artifacts, all made in the test (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline import checkpoint
from pipeline.data.build import prepare
from pipeline.data.params import AugmentParams
from pipeline.models import create_model
from pipeline.params import DataParams

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# unit tests use tiny tensors: one intra-op thread is fastest. With several test processes (`make test` runs
# two on a 2-core machine) the stage and DDP processes the end-to-end tests start get one thread each too:
# the suite measured 6 min 34 s against 8 min 04 s with torch's default of one thread per core.
torch.set_num_threads(1)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_data() -> dict:
    """4 classes of 1x16x16 images: 448 train / 64 val / 256 test."""
    return prepare(DataParams(source="synthetic", val_size=64, augment=AugmentParams(pad=2)), seed=0)


@pytest.fixture
def make_artifact(tmp_path, tiny_data):
    """Write a (random-weight) resnet8 artifact for the tiny data; returns its path."""

    def make(name: str = "t", arch: str = "resnet8", seed: int = 0):
        torch.manual_seed(seed)
        model = create_model(arch, 4, 1)
        art = checkpoint.make_artifact(
            model,
            arch=arch,
            arch_kwargs={},
            num_classes=4,
            in_channels=1,
            input_size=16,
            mean=tiny_data["mean"],
            std=tiny_data["std"],
            class_names=tiny_data["class_names"],
            params={"arch": arch, "method": "ce"},
            metrics={},
            kind="teacher",
            name=name,
        )
        path = tmp_path / f"{name}.pt"
        checkpoint.save(art, path)
        return path

    return make
