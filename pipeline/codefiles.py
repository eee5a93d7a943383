"""`code_files(method)`: the source files a training job of a method runs, from static imports.

The set is the import closure, over kdpipe's own modules (`pipeline.*`), of pipeline/jobs.py,
pipeline/train.py, the method's registry module (pipeline/methods/__init__.py) and the method's own
module, plus the modules of the methods it runs (`Method.uses(params)`, e.g. the professor's base
method). Imports are read with `ast` from the source text, so every `import` statement counts,
including ones inside functions; a package import counts its `__init__.py` and each parent package's.
The registry's dynamic import of every method module is not an `import` statement, so editing one
method (or report.py, bench.py, export.py...) never changes another job's code.

Used twice: the training fingerprint hashes these files (a resumed state is only continued by the same
code), and dvc.yaml's per-stage `deps` can list exactly these paths.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

from pipeline.methods import REGISTRY

ROOT = Path(__file__).resolve().parents[1]  # the folder that holds the `pipeline` package
ENTRY = ("pipeline.jobs", "pipeline.train", "pipeline.methods")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


@functools.lru_cache(maxsize=None)
def _imports(path: Path) -> frozenset[str]:
    """kdpipe modules named by the import statements of one file (`from pipeline import x` names pipeline.x too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(n for n in names if n.split(".")[0] == "pipeline")


def module_closure(modules: list[str]) -> list[str]:
    """Repo-relative paths of `modules`, their parent packages and everything they import, sorted."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # a.b.c runs a/__init__.py and a/b/__init__.py first
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports(f))
    return sorted(str(f.relative_to(ROOT)) for f in seen)


def code_files(method: str, params: Any = None) -> list[str]:
    """Repo-relative paths of the source files a training job of `method` runs (see the module docstring).

    `params` (the method's Params) adds the methods it runs, e.g. `professor` with base `kd` adds methods/kd.py.
    """
    cls = REGISTRY[method]
    names = [method] + (cls.uses(params) if params is not None else [])
    mods = [REGISTRY[n].__module__ for n in names if n in REGISTRY]
    return module_closure([*ENTRY, *mods])

