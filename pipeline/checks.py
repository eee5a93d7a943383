"""Whole-params validation: every section, every model, and the checks that span sections.

`collect_problems(raw, source)` returns (Params or None, problems): it parses section by section and
model by model, so one run lists every problem (`kdpipe check-params`), each on one line naming the
key and the fix. `parse_params` raises the first one. Seeds are expanded here: an entry with
`seeds: [0, 1, 2]` becomes `<name>_s0`, `<name>_s1`, `<name>_s2`, and references between seeded
entries are paired by seed, so each seed's student learns from the same seed's teacher and is
compared with the same seed's baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import convert, from_dict
from pipeline.errors import KdpipeError
from pipeline.params import (
    EXTRA_SECTIONS,
    MODEL_SECTIONS,
    BaseParams,
    DataParams,
    EvaluateParams,
    ExportParams,
    ModelParams,
    Params,
    SelectParams,
    model_ref,
)


def parse_model(data: Any, where: str) -> ModelParams:
    """Parse a teacher/student entry; its method block (key = method name) goes to `args`."""
    from pipeline.methods import REGISTRY
    from pipeline.models import check_arch

    if not isinstance(data, dict):
        raise KdpipeError(f"{where}: expected a mapping with at least 'arch', got {data!r}")
    method = data.get("method", "ce")
    if method not in REGISTRY or getattr(REGISTRY[method], "job", False):
        users = sorted(n for n, c in REGISTRY.items() if not getattr(c, "job", False))
        raise KdpipeError(f"{where}.method: unknown method {method!r}; known: {', '.join(users)}")
    own = {k: v for k, v in data.items() if k != method}
    if "group" in own:
        raise KdpipeError(f"{where}.group: set by kdpipe when seeds expand; remove it")
    spec = from_dict(ModelParams, own, where)
    if spec.arch != "selected":  # `selected`: the arch chosen by the select-student stage
        check_arch(spec.arch, f"{where}.arch")
    args = convert(data.get(method) or {}, REGISTRY[method].Params, f"{where}.{method}")
    return dataclasses.replace(spec, args=args)


def _expand(models: dict[str, ModelParams]) -> dict[str, ModelParams]:
    """One entry per seed: `<name>_s<k>` with seed k; entries without `seeds` keep their name."""
    out = {}
    for name, spec in models.items():
        if not spec.seeds:
            out[name] = dataclasses.replace(spec, group=name)
        for k in spec.seeds:
            out[f"{name}_s{k}"] = dataclasses.replace(spec, seed=k, seeds=[], group=name)
    return out


def _resolve(ref: str, spec: ModelParams, raw: dict[str, dict], params: Params) -> str:
    """Map a reference to a raw entry onto the expanded model of the same seed (unchanged if not seeded)."""
    section, _, name = ref.rpartition("/")
    entry = raw.get(section or "teachers", {}).get(name)
    if not isinstance(entry, dict) or not entry.get("seeds"):
        return ref
    seeds = entry["seeds"]
    if spec.seed not in seeds:
        raise KdpipeError(
            f"{ref!r} has seeds {seeds}; give the entry that names it the same seeds, or name one (e.g. "
            f"{ref}_s{seeds[0]})"
        )
    return f"{ref}_s{spec.seed}"


def _sections(raw: dict, problems: list[str]) -> dict[str, Any]:
    parsers: dict[str, Callable[[Any, str], Any]] = {
        "base": lambda v, w: from_dict(BaseParams, v, w),
        "data": lambda v, w: from_dict(DataParams, v, w),
        "evaluate": lambda v, w: from_dict(EvaluateParams, v, w),
        "export": lambda v, w: from_dict(ExportParams, v, w),
    }
    out: dict[str, Any] = {}
    for key, parse in parsers.items():
        try:
            out[key] = parse(raw.get(key), key)
        except KdpipeError as e:
            problems.append(str(e))
            out[key] = parse(None, key)
    from pipeline.knowledge.factor import FactorParams
    from pipeline.knowledge.probes import ProbesParams
    from pipeline.knowledge.professor import ProfessorParams

    for key, cls in (("professor", ProfessorParams), ("probes", ProbesParams), ("factor", FactorParams)):
        try:  # the knowledge stages parse their section again; checking it here lists its problems up front
            from_dict(cls, raw.get(key), key)
        except KdpipeError as e:
            problems.append(str(e))
    if raw.get("select") is not None:
        try:
            out["select"] = from_dict(SelectParams, raw["select"], "select")
        except KdpipeError as e:
            problems.append(str(e))
    for sec in MODEL_SECTIONS:
        entries = raw.get(sec) or {}
        if not isinstance(entries, dict):
            problems.append(f"{sec}: expected a mapping of model names to entries, got {entries!r}")
            entries = {}
        parsed = {}
        for k, v in entries.items():
            try:
                parsed[str(k)] = parse_model(v, f"{sec}.{k}")
            except KdpipeError as e:
                problems.append(str(e))
        out[sec] = _expand(parsed)
    return out


def _links(p: Params, raw: dict, problems: list[str]) -> Params:
    """Resolve seeded references and check that every named model exists."""
    secs = {}
    for sec in MODEL_SECTIONS:
        resolved = {}
        for name, spec in getattr(p, sec).items():
            try:
                teachers = [_resolve(t, spec, raw, p) for t in spec.teachers]
                for t in teachers:
                    p.model(t)
                baseline = (
                    _resolve(spec.baseline, spec, {"teachers": raw.get("students") or {}}, p)
                    if spec.baseline
                    else ""
                )
                if baseline and baseline not in p.students:
                    raise KdpipeError(f"baseline {spec.baseline!r} is not a student in params")
                resolved[name] = dataclasses.replace(spec, teachers=teachers, baseline=baseline)
            except KdpipeError as e:
                problems.append(f"{sec}.{spec.group}: {e}")
                resolved[name] = spec
        secs[sec] = resolved
    p = dataclasses.replace(p, **secs)
    return dataclasses.replace(p, students={n: _default_baseline(n, s, p) for n, s in p.students.items()})


def _default_baseline(name: str, spec: ModelParams, p: Params) -> ModelParams:
    """The `ce` student of the same arch, same seed, is the baseline of a student that names none."""
    if spec.baseline or spec.method == "ce":
        return spec
    for other, o in p.students.items():
        if o.method == "ce" and o.arch == spec.arch and o.seed == spec.seed and other != name:
            return dataclasses.replace(spec, baseline=other)
    return spec


def _cycles(p: Params, problems: list[str]) -> None:
    """Refuse a model taught by itself or a cycle of models teaching each other."""
    graph = {
        model_ref(sec, n): list(s.teachers) for sec in MODEL_SECTIONS for n, s in getattr(p, sec).items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = path[path.index(node) :] + [node]
            problems.append(
                f"teachers: {' <- '.join(cycle)} teach each other in a cycle; break it in their teachers "
                "lists"
            )
            return
        state[node] = 1
        for t in graph.get(node, []):
            visit(t, path + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def _roles(p: Params, problems: list[str]) -> None:
    """Section rules: teachers learn from labels, generations have one teacher, exports and ensembles
    exist."""

    for sec in ("teachers", "patriarchs"):
        for _, s in getattr(p, sec).items():
            if s.teachers:
                problems.append(
                    f"{sec}.{s.group}.teachers: {sec} learn from labels only; move the entry to students"
                )
    for _, s in p.generations.items():
        if len(s.teachers) != 1 or "/" not in s.teachers[0]:
            problems.append(
                f"generations.{s.group}.teachers: name exactly one teacher as <section>/<name> "
                "(e.g. patriarchs/tol, generations/gen1)"
            )
    for sec, _, s in [(section, n, s) for section in MODEL_SECTIONS for n, s in getattr(p, section).items()]:
        if s.arch == "selected" and p.select is None:
            problems.append(
                f"{sec}.{s.group}.arch: 'selected' needs a `select` section (the budget select-student meets)"
            )
        if s.arch == "selected" and s.arch_kwargs:
            problems.append(
                f"{sec}.{s.group}.arch_kwargs: set by select-student for arch: selected; remove them"
            )
        if s.train_subset and p.data.train_subset and s.train_subset > p.data.train_subset:
            problems.append(
                f"{sec}.{s.group}.train_subset: {s.train_subset} is more than data.train_subset "
                f"({p.data.train_subset}); use a number <= data.train_subset"
            )
    for n in p.export.students:
        if n not in p.students:
            problems.append(
                f"export.students: {n!r} is not a student in params; known: {', '.join(p.students) or 'none'}"
            )
    for ens, members in p.evaluate.ensembles.items():
        for m in members:
            try:
                p.model(m)
            except KdpipeError as e:
                problems.append(f"evaluate.ensembles.{ens}: {e}")
    for sec in EXTRA_SECTIONS:
        for t in (p.extra.get(sec) or {}).get("teachers", []) if isinstance(p.extra.get(sec), dict) else []:
            try:
                p.model(t)
            except KdpipeError as e:
                problems.append(f"{sec}.teachers: {e}")


def collect_problems(raw: dict, source: str = "params.yaml") -> tuple[Params | None, list[str]]:
    """Parse everything that parses; return the Params (None if a section is unusable) and every problem
    found."""
    problems: list[str] = []
    known = {f.name for f in dataclasses.fields(Params)} - {"extra"} | set(EXTRA_SECTIONS)
    for k in raw:
        if k not in known:
            problems.append(f"{k}: unknown section; known: {', '.join(sorted(known))}")
    p = Params(**_sections(raw, problems), extra={k: raw[k] for k in EXTRA_SECTIONS if k in raw})
    names: dict[str, str] = {}
    for sec in MODEL_SECTIONS:
        for name in getattr(p, sec):
            if name in names:
                problems.append(
                    f"{sec}.{name}: also in {names[name]}; model names must be unique across sections"
                )
            names[name] = sec
    p = _links(p, raw, problems)
    _cycles(p, problems)
    _roles(p, problems)
    return p, [f"{source}: {m}" for m in problems]


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Parse a loaded params mapping; the first problem (of all, see `collect_problems`) is a KdpipeError."""
    p, problems = collect_problems(raw, source)
    if problems:
        more = f" (and {len(problems) - 1} more: run `kdpipe check-params`)" if len(problems) > 1 else ""
        raise KdpipeError(problems[0] + more)
    return p


def read_yaml(path: str | Path) -> dict:
    """The params file as a mapping; a missing file or bad YAML is a one-line KdpipeError."""
    path = Path(path)
    if not path.is_file():
        raise KdpipeError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise KdpipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise KdpipeError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; a problem is a one-line KdpipeError naming the file and key."""
    return parse_params(read_yaml(path), str(path))
