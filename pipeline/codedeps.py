"""Which source files a command runs: the static import closure of kdpipe modules (no import executed).

DVC re-runs a stage when one of its deps changes, and a resumed training run continues only state
written by the same code. Both need "the code this job runs", no more: editing the report must not
retrain a model. `closure(modules)` follows every `import pipeline...` / `from pipeline... import ...`
(function-level imports included) of the named modules through the source tree, found by reading
the files with `ast`; `from pkg import name` counts `pkg/name.py` when it exists. The methods registry
loads its modules dynamically, so a training job adds its method's module explicitly
(`method_module`).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

# the repository (or installed tree) that holds pipeline/ and stages/
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def _file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@cache
def _imports(module: str) -> tuple[str, ...]:
    """kdpipe modules imported anywhere in `module`'s source (and its parent packages' __init__)."""
    path = _file(module)
    if path is None:
        return ()
    found: set[str] = set()
    parts = module.split(".")
    found.update(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _file(f"{node.module}.{a.name}"))
    return tuple(sorted(m for m in found if m.split(".")[0] in PACKAGES and _file(m)))


def closure(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Repo-relative source files of `modules` and everything they import from kdpipe, sorted."""
    seen: set[str] = set()
    todo = [m for m in modules if _file(m)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(m))
    return sorted(str(_file(m).relative_to(ROOT)) for m in seen)  # type: ignore[union-attr]


def method_module(method: str) -> str:
    """The module that registers `method` (pipeline.methods.<file>), read from the registry."""
    from pipeline.methods import REGISTRY

    return REGISTRY[method].__module__


def code_files(method: str, params: Any = None) -> list[str]:
    """The source files a training job of `method` runs: the job runner, the loop, the registry, the method's
    module and those of the methods it runs (`Method.uses(params)`, e.g. the professor's base method).

    The training fingerprint hashes them (a resumed state is continued only by the same code) and dvc.yaml
    lists them as deps; editing report.py, bench.py or another method changes neither."""
    from pipeline.methods import REGISTRY

    names = [method] + (REGISTRY[method].uses(params) if params is not None else [])
    return closure(
        ["pipeline.jobs", "pipeline.train", "pipeline.methods", *(method_module(n) for n in names)]
    )


def digest(files: list[str]) -> str:
    """sha256 over the named files' contents (paths included, so a rename counts), 16 hex digits."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + (ROOT / f).read_bytes())
    return h.hexdigest()[:16]
