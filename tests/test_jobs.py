"""The one job runner: byte-identical artifacts from identical inputs, exact code files, one-line teacher
checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline import checkpoint, job_inputs
from pipeline.codedeps import code_files
from pipeline.errors import KdpipeError
from pipeline.job_inputs import data_digest, knowledge_source, make_loader, restrict_train
from pipeline.job_spec import RunPaths, Teacher, knowledge_job, model_job
from pipeline.jobs import run_job
from pipeline.knowledge.factor import FactorParams
from pipeline.knowledge.probes import ProbesParams
from pipeline.knowledge.professor import ProfessorParams, refined_source, targets_file
from pipeline.methods import REGISTRY
from pipeline.models import create_model
from pipeline.params import BaseParams, ModelParams, OptimParams
from pipeline.sources import CachedFeatures, CachedLogits, OnlineTeachers

BASE = BaseParams(device="cpu", threads=1)
ONE = OptimParams(epochs=1, batch_size=128, lr=0.05)


def _teacher_job() -> object:
    return model_job("t", "teacher", ModelParams(arch="resnet8", optim=ONE, args=REGISTRY["ce"].Params()))


def _jobs(teacher) -> dict:
    refs = [("t", teacher, "resnet8")]
    kd = ModelParams(arch="resnet8", method="kd", teachers=["t"], optim=ONE, args=REGISTRY["kd"].Params())
    return {
        "teacher": _teacher_job(),
        "student": model_job("s", "student", kd, teachers=refs),
        "professor": knowledge_job("professor_job", "t", ProfessorParams(epochs=1), refs),
        "probes": knowledge_job("probes_job", "probes", ProbesParams(epochs=1), refs),
        "factor": knowledge_job("factor_job", "t", FactorParams(epochs=1, channels=8), refs),
    }


@pytest.mark.parametrize("kind", ["teacher", "student", "professor", "probes", "factor"])
def test_the_same_inputs_give_byte_identical_artifacts(kind, tiny_data, make_artifact, tmp_path):
    job = _jobs(make_artifact("t"))[kind]
    shas = []
    for run in ("a", "b"):  # other directories, same inputs
        res = run_job(job, BASE, tiny_data, RunPaths(tmp_path / run / f"{kind}.pt"))
        shas.append([checkpoint.sha256(p) for p in sorted((tmp_path / run).glob("*.pt"))])
        art = torch.load(res.artifact, weights_only=True)
        assert art["kind"] == kind and art["format"] == checkpoint.ARTIFACT_FORMAT
        assert not [k for k in art["metrics"] if k.startswith("time/")], art["metrics"]
    # the professor's .targets.pt too
    assert shas[0] == shas[1] and len(shas[0]) == (2 if kind == "professor" else 1)


def test_resuming_a_finished_run_rewrites_the_same_bytes(tiny_data, tmp_path):
    paths = RunPaths(tmp_path / "t.pt", tmp_path / "state" / "last.pt")
    first = run_job(_teacher_job(), BASE, tiny_data, paths)
    sha = checkpoint.sha256(paths.artifact)
    again = run_job(_teacher_job(), BASE, tiny_data, paths)
    assert (first.fit.resumed_from, again.fit.resumed_from) == (0, 1) and checkpoint.sha256(
        paths.artifact
    ) == sha
    other = dataclasses.replace(_teacher_job(), seed=1)  # other params: a fresh start, never the old state
    assert run_job(other, BASE, tiny_data, paths).fit.resumed_from == 0


def test_code_files_are_the_import_closure_of_the_job():
    kd = set(code_files("kd"))
    assert {
        "pipeline/jobs.py",
        "pipeline/train.py",
        "pipeline/methods/__init__.py",
        "pipeline/methods/kd.py",
        "pipeline/losses/multi_teacher.py",
        "pipeline/checkpoint.py",
        "pipeline/models/resnet_cifar.py",
    } <= kd
    # other methods, the report, benchmarks and export never change a kd job's code
    assert not kd & {
        "pipeline/methods/dkd.py",
        "pipeline/report.py",
        "pipeline/bench.py",
        "pipeline/export.py",
        "pipeline/knowledge/professor.py",
    }
    assert {"pipeline/knowledge/professor.py", "pipeline/methods/professor_job.py"} <= set(
        code_files("professor_job")
    )
    prof = REGISTRY["professor"].Params(base="dkd")
    assert "pipeline/methods/dkd.py" in code_files(
        "professor", prof
    ) and "pipeline/methods/dkd.py" not in code_files("professor")


def test_data_digest_follows_the_training_data(tiny_data):
    other = dict(tiny_data, train_y=tiny_data["train_y"].roll(1))
    assert data_digest(tiny_data) == data_digest(dict(tiny_data)) and data_digest(other) != data_digest(
        tiny_data
    )


def test_a_teacher_of_another_arch_under_the_right_name_is_one_line(tiny_data, make_artifact, tmp_path):
    job = _jobs(make_artifact("t"))["student"]
    # params say resnet20, the file holds a resnet8
    job.teachers = [Teacher("t", job.teachers[0].path, "resnet20")]
    with pytest.raises(KdpipeError, match="has arch='resnet8' but params say 'resnet20'"):
        run_job(job, BASE, tiny_data, RunPaths(tmp_path / "s.pt"))
    assert not (tmp_path / "s.pt").exists()


def test_a_knowledge_job_is_no_student_method():
    with pytest.raises(KdpipeError, match="'factor_job' is not a student method"):
        model_job("s", "student", ModelParams(arch="resnet8", method="factor_job"))


def test_layering_knowledge_and_methods_never_import_the_runner_or_params():
    from pipeline.codedeps import closure as module_closure

    low = module_closure(
        ["pipeline.knowledge.professor", "pipeline.knowledge.probes", "pipeline.knowledge.factor"]
    )
    assert not [
        f
        for f in low
        if f.startswith(("pipeline/methods", "pipeline/jobs", "pipeline/params", "pipeline/train"))
    ], low
    methods = module_closure(["pipeline.methods", *sorted({c.__module__ for c in REGISTRY.values()})])
    assert not {"pipeline/params.py", "pipeline/jobs.py", "pipeline/train.py"} & set(methods)


def test_train_subset_is_the_same_balanced_images_for_every_model_of_a_seed(tiny_data):
    a, b = restrict_train(tiny_data, 40, seed=0), restrict_train(tiny_data, 40, seed=0)
    assert torch.equal(a["train_rows"], b["train_rows"]) and len(a["train_y"]) == 40
    assert torch.bincount(a["train_y"]).tolist() == [10, 10, 10, 10]  # 4 classes, balanced
    assert torch.equal(a["train_x"], tiny_data["train_x"][a["train_rows"]])
    assert not torch.equal(restrict_train(tiny_data, 40, seed=1)["train_rows"], a["train_rows"])
    assert restrict_train(tiny_data, 0, seed=0) is tiny_data
    with pytest.raises(KdpipeError, match="model.train_subset=449 but the split has 448"):
        restrict_train(tiny_data, 449, seed=0)


def test_cached_targets_follow_the_train_subset_rows(tiny_data, tmp_path):
    # cached logits of the full split: row i is (i, -i, 0, 0), so the row read for an image names its position
    full = len(tiny_data["train_y"])
    table = torch.zeros(full, 4)
    table[:, 0], table[:, 1] = torch.arange(full), -torch.arange(full)
    checkpoint.save({"train": table}, tmp_path / "t.targets.pt")
    kd = ModelParams(
        arch="resnet8",
        method="kd",
        teachers=["t"],
        targets="cached",
        augment=False,
        train_subset=40,
        optim=ONE,
        args=REGISTRY["kd"].Params(),
    )
    job = model_job("s", "student", kd, targets=[tmp_path / "t.targets.pt"])
    data = restrict_train(tiny_data, job.train_subset, BASE.seed)
    source = knowledge_source(job, None, data, torch.device("cpu"))
    assert torch.equal(source.table[0, :, 0], data["train_rows"].float())
    res = run_job(job, BASE, tiny_data, RunPaths(tmp_path / "s.pt"))  # trains on the 40 images, end to end
    assert torch.load(res.artifact, weights_only=True)["params"]["train_subset"] == 40


def test_refined_targets_follow_the_train_subset_rows(tmp_path):
    # full split of 10 images; the student trains on rows 7, 2, 5. Teacher row i is (i, 0), refined row i
    # is (0, -i): both tables must come back as the rows 7, 2, 5 in that order.
    rows = torch.tensor([7, 2, 5])
    teacher = torch.stack([torch.arange(10.0), torch.zeros(10)], 1)
    refined = torch.stack([torch.zeros(10), -torch.arange(10.0)], 1)
    checkpoint.save({"train": refined}, targets_file(tmp_path / "p.pt"))
    source = refined_source(CachedLogits(teacher[None], rows), [tmp_path / "p.pt"])
    assert torch.equal(source.table[0, :, 1], torch.tensor([-7.0, -2.0, -5.0]))
    checkpoint.save({"train": refined[:9]}, targets_file(tmp_path / "p.pt"))  # one image short: refused
    with pytest.raises(KdpipeError, match="do not match the cached teacher logits"):
        refined_source(CachedLogits(teacher[None], rows), [tmp_path / "p.pt"])


def _online(tiny_data) -> OnlineTeachers:
    torch.manual_seed(0)
    return OnlineTeachers([create_model("resnet8", 4, 1), create_model("resnet14", 4, 1)])


def test_cached_features_are_the_online_features_of_the_same_images(tiny_data):
    online = _online(tiny_data)
    n = len(tiny_data["train_y"])
    cached = CachedFeatures(online, make_loader(tiny_data, "train", batch_size=100), n)
    batch = next(iter(make_loader(tiny_data, "train", batch_size=32, train=True, seed=3)))  # shuffled rows
    (fo, zo), (fc, zc) = online.features(batch), cached.features(batch)
    assert torch.allclose(zc, zo, atol=1e-5) and torch.allclose(cached.logits(batch), zo, atol=1e-5)
    assert [len(f) for f in fc] == [len(f) for f in fo]
    assert all(torch.allclose(a, b, atol=1e-5) for fa, fb in zip(fc, fo) for a, b in zip(fa, fb))


def test_feature_teachers_are_cached_only_without_augmentation_and_within_memory(tiny_data, monkeypatch):
    def source(augment: bool):
        at = ModelParams(
            arch="resnet8",
            method="at",
            teachers=["t"],
            augment=augment,
            optim=ONE,
            args=REGISTRY["at"].Params(),
        )
        return knowledge_source(
            model_job("s", "student", at), _online(tiny_data), tiny_data, torch.device("cpu")
        )

    assert isinstance(source(False), CachedFeatures)
    assert isinstance(source(True), OnlineTeachers)  # augmented images differ every epoch
    monkeypatch.setattr(job_inputs, "FEATURE_CACHE", 10)  # 10 bytes: features of 448 images do not fit
    assert isinstance(source(False), OnlineTeachers)
