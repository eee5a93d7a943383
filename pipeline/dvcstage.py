"""The building blocks of a generated dvc.yaml stage: path conventions (`Paths`), code deps, the
params keys a file really has, and the stage mapping itself."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.codedeps import ROOT, closure

# written by check-params; its content is constant, so it orders without re-running
CHECKED = "results/check-params.txt"
SELECTED = "models/selected.json"  # select-student's choice, read by students with arch: selected


class Paths(Protocol):
    """The project's path conventions (stages/_layout.py)."""

    data: str  # the prepared data folder (prepare-data's output)
    results_dir: str  # where report.md and plots/ go

    def model(self, ref: str) -> str: ...
    def state(self, section: str, name: str) -> str: ...
    def results(self, stage: str, name: str = "") -> str: ...
    def knowledge(self, kind: str, teacher: str = "") -> str: ...
    def export(self, name: str, int8: bool = False) -> str: ...


def code_deps(*modules: str) -> list[str]:
    return compact(closure(list(modules)))


def compact(files: list[str]) -> list[str]:
    """Name a sub-package folder instead of its files when every source file under it is listed (shorter
    dvc.yaml, same effect: .dvcignore keeps __pycache__ out of folder hashes)."""
    listed, out = set(files), set(files)
    for f in files:
        parts = f.split("/")
        # pipeline/<pkg>, pipeline/<pkg>/<sub>, ...; never the whole pipeline/
        for depth in range(2, len(parts)):
            folder = ROOT.joinpath(*parts[:depth])
            every = {str(g.relative_to(ROOT)) for g in folder.rglob("*.py")}
            if every <= listed:
                out -= every
                out.add("/".join(parts[:depth]))
                break
    return sorted(out)


def present(raw: dict, keys: list[str]) -> list[str]:
    """The dotted params keys that exist in the params file: DVC refuses to track an absent one, and an
    absent section means its defaults (adding it later changes dvc.yaml, which check-params reports)."""

    def has(dotted: str) -> bool:
        node: Any = raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    return [k for k in keys if has(k)]


def out_entry(path: str, **kw: Any) -> dict:
    return {path: kw} if kw else path  # type: ignore[return-value]


def make_stage(cmd: str, deps: list[str], params: list[Any], outs: list[Any], **extra: Any) -> dict:
    body: dict[str, Any] = {"cmd": cmd, "deps": sorted(set(deps))}
    if params:
        body["params"] = params
    body["outs"] = outs
    body.update(extra)
    return body
