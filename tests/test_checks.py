"""Whole-params validation at load: ranges, names, teacher graphs, seeds and baselines."""

from __future__ import annotations

import pytest

from pipeline.checks import collect_problems, parse_params
from pipeline.errors import KdpipeError

T = {"arch": "resnet8"}


def one(raw: dict) -> str:
    """The single problem `raw` has (fails if it has none or several)."""
    _, problems = collect_problems(raw)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    "optim, key",
    [
        ({"epochs": 0}, "optim.epochs: must be >= 1, got 0"),
        ({"epochs": -3}, "optim.epochs: must be >= 1, got -3"),
        ({"batch_size": 0}, "optim.batch_size: must be >= 1, got 0"),
        ({"lr": -0.1}, "optim.lr: must be > 0, got -0.1"),
        ({"momentum": 1.5}, "optim.momentum: must be < 1, got 1.5"),
    ],
)
def test_optim_ranges_are_checked_when_params_load(optim, key):
    assert one({"students": {"s": {**T, "optim": optim}}}) == f"params.yaml: students.s.{key}"


def test_unknown_arch_lists_the_known_ones():
    msg = one({"students": {"s": {"arch": "mobilenet_v9"}}})
    assert "students.s.arch: unknown arch 'mobilenet_v9'" in msg and "resnet8" in msg


def test_a_student_taught_by_itself_or_in_a_cycle_is_refused():
    assert "students/a <- students/a" in one(
        {"students": {"a": {**T, "method": "kd", "teachers": ["students/a"]}}}
    )
    raw = {
        "students": {
            "a": {**T, "method": "kd", "teachers": ["students/b"]},
            "b": {**T, "method": "kd", "teachers": ["students/a"]},
        }
    }
    assert "teach each other in a cycle" in one(raw)


def test_every_problem_is_listed_not_only_the_first():
    raw = {
        "studnets": {},
        "base": {"threads": -1},
        "students": {"s": {"arch": "nope"}, "t": {**T, "optim": {"lr": 0}}},
        "export": {"students": ["ghost"]},
    }
    _, problems = collect_problems(raw)
    assert len(problems) == 5, problems
    with pytest.raises(
        KdpipeError, match=r"studnets: unknown section.*\(and 4 more: run `kdpipe check-params`\)"
    ):
        parse_params(raw)


def test_seeds_expand_into_one_model_per_seed_paired_with_teacher_and_baseline():
    raw = {
        "teachers": {"t": {**T, "seeds": [0, 1]}},
        "students": {
            "scratch": {**T, "seeds": [0, 1]},
            "kd": {**T, "method": "kd", "teachers": ["t"], "seeds": [0, 1]},
        },
    }
    p = parse_params(raw)
    assert sorted(p.students) == ["kd_s0", "kd_s1", "scratch_s0", "scratch_s1"]
    kd1 = p.students["kd_s1"]
    assert (kd1.seed, kd1.group, kd1.teachers, kd1.baseline) == (1, "kd", ["t_s1"], "scratch_s1")
    assert p.teachers["t_s0"].seed == 0 and p.teachers["t_s0"].group == "t"


def test_a_seeded_teacher_needs_a_seed_from_its_student():
    raw = {
        "teachers": {"t": {**T, "seeds": [0, 1]}},
        "students": {"kd": {**T, "method": "kd", "teachers": ["t"], "seed": 5}},
    }
    assert "'t' has seeds [0, 1]" in one(raw)
    ok = {
        "teachers": {"t": {**T, "seeds": [0, 1]}},
        "students": {"kd": {**T, "method": "kd", "teachers": ["t_s1"]}},
    }
    assert parse_params(ok).students["kd"].teachers == ["t_s1"]


def test_explicit_baseline_must_be_a_student():
    raw = {"students": {"a": {**T, "method": "ce"}, "b": {**T, "method": "ce", "baseline": "zz"}}}
    assert "baseline 'zz' is not a student" in one(raw)


def test_method_blocks_and_job_methods():
    assert "unknown method 'kdd'" in one({"students": {"s": {**T, "method": "kdd"}}})
    assert "group: set by kdpipe" in one({"students": {"s": {**T, "group": "x"}}})


def test_a_model_train_subset_is_refused_where_it_cannot_hold():
    assert one({"data": {"train_subset": 100}, "students": {"s": {**T, "train_subset": 200}}}) == (
        "params.yaml: students.s.train_subset: 200 is more than data.train_subset (100); "
        "use a number <= data.train_subset"
    )
    assert collect_problems({"students": {"s": {**T, "train_subset": 50}}})[1] == []
    # knowledge cached for the whole split (refined targets, probes, factor) is read by the student's rows
    raw = {"teachers": {"t": T}, "students": {"s": {**T, "method": "professor", "teachers": ["t"]}}}
    raw["students"]["s"]["train_subset"] = 50
    assert collect_problems(raw)[1] == []
