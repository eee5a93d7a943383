"""repro-parallel's stage order: dependency levels, downstream stages, one line naming a failed stage."""

from __future__ import annotations

import pytest

from pipeline.errors import KdpipeError
from pipeline.stage_dag import downstream, levels, run_stages

# data -> teacher -> (kd, at) -> report; a folder dep (models/students) holds both students' outs
STAGES = {
    "prepare": {"cmd": "mkdir -p data && echo x > data/x", "outs": ["data"]},
    "teacher": {
        "cmd": "mkdir -p models && echo t > models/t.pt",
        "deps": ["data/x"],
        "outs": ["models/t.pt"],
    },
    "kd": {
        "cmd": "mkdir -p models/students && echo k > models/students/kd.pt",
        "deps": ["models/t.pt"],
        "outs": [{"models/students/kd.pt": {"cache": False}}],
    },
    "at": {
        "cmd": "mkdir -p models/students && echo a > models/students/at.pt",
        "deps": ["models/t.pt", "data"],
        "outs": ["models/students/at.pt"],
    },
    "report": {"cmd": "cat models/students/*.pt > r.md", "deps": ["models/students"], "metrics": ["r.md"]},
}


def test_levels_put_each_stage_after_the_stages_that_write_its_deps():
    assert levels(STAGES) == [["prepare"], ["teacher"], ["at", "kd"], ["report"]]
    assert levels({n: STAGES[n] for n in ("kd", "at")}) == [["at", "kd"]]  # deps outside: taken as present
    with pytest.raises(KdpipeError, match="dependency cycle"):
        levels({"a": {"deps": ["b.txt"], "outs": ["a.txt"]}, "b": {"deps": ["a.txt"], "outs": ["b.txt"]}})


def test_downstream_adds_every_stage_a_change_reaches():
    assert downstream(STAGES, {"teacher"}) == {"teacher", "kd", "at", "report"}
    assert downstream(STAGES, {"kd", "gone"}) == {"kd", "report"}


def test_run_stages_runs_in_order_and_names_a_failed_stage(tmp_path):
    ran = run_stages(STAGES, 2, tmp_path, tmp_path / "logs")
    assert ran[:2] == ["prepare", "teacher"] and set(ran[2:4]) == {"at", "kd"} and ran[4] == "report"
    assert (tmp_path / "r.md").read_text() == "a\nk\n"  # both students existed when the report ran
    (tmp_path / "r.md").unlink()
    bad = {**STAGES, "kd": {**STAGES["kd"], "cmd": "echo 'no teacher file' >&2; exit 3"}}
    with pytest.raises(KdpipeError, match=r"stage kd failed \(no teacher file\); see .*kd.log"):
        run_stages(bad, 2, tmp_path, tmp_path / "logs")
    # the report's earlier log: it did not run again
    assert not (tmp_path / "logs" / "report.log").read_text()


def test_stages_with_dependants_start_first(tmp_path):
    # one job at a time: the teacher (two students wait for it) goes before a student that needs nothing
    stages = {
        "a_scratch": {"cmd": "echo a >> order.txt", "outs": ["a.pt"]},
        "z_teacher": {"cmd": "echo t >> order.txt; touch t.pt", "outs": ["t.pt"]},
        "kd": {"cmd": "echo kd >> order.txt", "deps": ["t.pt"], "outs": ["kd.pt"]},
        "at": {"cmd": "echo at >> order.txt", "deps": ["t.pt"], "outs": ["at.pt"]},
    }
    assert run_stages(stages, 1, tmp_path, tmp_path / "logs")[0] == "z_teacher"
    assert (tmp_path / "order.txt").read_text().split()[0] == "t"
