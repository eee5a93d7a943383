"""The strict params loader: unknown keys and wrong types fail with the key and the file named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.checks import load_params, parse_params
from pipeline.errors import KdpipeError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_default_profile_loads():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "fashion_mnist"
    assert len(p.teachers) >= 2 and "scratch" in p.students
    kd = next(s for s in p.students.values() if s.method == "kd")
    assert kd.args.temperature > 0 and kd.teachers


@pytest.mark.parametrize("profile", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_loads(profile):
    load_params(profile)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "data: {sorce: mnist}\n")
    with pytest.raises(KdpipeError, match=r"params.yaml: data.sorce: unknown key"):
        load_params(path)


def test_wrong_type_names_key(tmp_path):
    path = write(tmp_path, "students:\n  s: {arch: resnet8, optim: {epochs: ten}}\n")
    with pytest.raises(KdpipeError, match=r"students.s.optim.epochs: expected an integer"):
        load_params(path)


def test_method_block_is_parsed_strictly(tmp_path):
    ok = write(
        tmp_path,
        "teachers: {t: {arch: resnet8}}\nstudents:\n  s: {arch: resnet8, method: kd, teachers: [t], kd: "
        "{temperature: 2}}\n",
    )
    assert load_params(ok).students["s"].args.temperature == 2.0  # int accepted for a float field
    bad = write(
        tmp_path,
        "teachers: {t: {arch: resnet8}}\nstudents:\n  s: {arch: resnet8, method: kd, teachers: [t], kd: "
        "{temprature: 2}}\n",
    )
    with pytest.raises(KdpipeError, match=r"students.s.kd.temprature: unknown key"):
        load_params(bad)


def test_block_of_another_method_is_rejected():
    raw = {"students": {"s": {"arch": "resnet8", "method": "ce", "kd": {"temperature": 2}}}}
    with pytest.raises(KdpipeError, match=r"students.s.kd: unknown key"):
        parse_params(raw)


def test_unknown_method_and_missing_teacher():
    with pytest.raises(KdpipeError, match=r"unknown method 'kdd'"):
        parse_params({"students": {"s": {"arch": "resnet8", "method": "kdd"}}})
    with pytest.raises(KdpipeError, match=r"'nobody' is not a model in params"):
        parse_params({"students": {"s": {"arch": "resnet8", "method": "kd", "teachers": ["nobody"]}}})


def test_unknown_section_and_bad_yaml(tmp_path):
    with pytest.raises(KdpipeError, match=r"studnets: unknown section"):
        parse_params({"studnets": {}})
    with pytest.raises(KdpipeError, match=r"not valid YAML"):
        load_params(write(tmp_path, "base: [1, 2\n"))
    with pytest.raises(KdpipeError, match=r"params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_duplicate_names_and_generation_needs_one_teacher():
    with pytest.raises(KdpipeError, match=r"students.a: also in teachers"):
        parse_params({"teachers": {"a": {"arch": "resnet8"}}, "students": {"a": {"arch": "resnet8"}}})
    with pytest.raises(KdpipeError, match=r"exactly one teacher"):
        parse_params({"generations": {"g": {"arch": "resnet8", "method": "kd"}}})


class _DebianPackageInstalled(type(Path())):
    """Debian's dataset-fashion-mnist as seen on a machine that has it (the committed reference run's)."""

    def is_file(self) -> bool:
        return True


def test_every_profile_generates_a_dvc_yaml_whose_params_exist(tmp_path, monkeypatch):
    """`kdpipe dvc-yaml` works for every shipped profile, and every params key a stage tracks is in it (DVC
    refuses absent keys); the committed dvc.yaml is the one params.yaml calls for on a machine with Debian's
    Fashion-MNIST package, whether or not this machine has it."""
    from pipeline.data import sources
    from stages.dvc_yaml import expected

    debian = _DebianPackageInstalled("/usr/share/datasets/fashion-mnist")
    monkeypatch.setattr(sources, "DEBIAN_FASHION", debian)

    def has(raw: dict, dotted: str) -> bool:
        for part in dotted.split("."):
            if not isinstance(raw, dict) or part not in raw:
                return False
            raw = raw[part]
        return True

    for profile in [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))]:
        raw = yaml.safe_load(profile.read_text())
        stages = yaml.safe_load(expected(profile))["stages"]
        keys = {k for st in stages.values() for k in st.get("params", []) if isinstance(k, str)}
        missing = sorted(k for k in keys if k != "base" and not has(raw, k))
        assert not missing, f"{profile.name} lacks {missing}"
    assert (ROOT / "dvc.yaml").read_text() == expected(ROOT / "params.yaml"), "run `kdpipe dvc-yaml`"
