"""Chains of models taught by models of the same section (KD in generations): order and lineage.

A model names its teacher as `<section>/<name>` (e.g. `patriarchs/tol`, `generations/tol_gen1`;
stages.model_path maps it to `models/<section>/<name>.pt`); a bare name is a key of `teachers`.
DVC orders the stages through these deps; these helpers check the same graph from params alone,
so a cycle or a dangling link is a one-line error before anything trains, and the report can
number the generations of a chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.errors import KdpipeError
from pipeline.params import MODEL_SECTIONS, ModelParams, Params


def known_models(params: Params) -> set[str]:
    """Every name a `teachers:` list may use: `<section>/<name>` for each model, bare for teachers."""
    return {f"{s}/{n}" for s in MODEL_SECTIONS for n in getattr(params, s)} | set(params.teachers)


def _links(
    name: str, spec: ModelParams, models: Mapping[str, ModelParams], section: str, known: set[str] | None
) -> list[str]:
    """The names in `models` that `name` is taught by; a link to nothing is an error."""
    out = []
    for t in spec.teachers:
        if t.startswith(f"{section}/"):
            n = t[len(section) + 1 :]
            if n not in models:
                raise KdpipeError(
                    f"{section}.{name} names teacher {t!r}, but there is no {section} entry {n!r}; fix "
                    f"{section}.{name}.teachers"
                )
            out.append(n)
        elif known is not None and t not in known:
            raise KdpipeError(
                f"{section}.{name} names teacher {t!r}, which is not a model in params; fix "
                f"{section}.{name}.teachers"
            )
    return out


def generation_order(
    models: Mapping[str, ModelParams], section: str = "generations", known: Iterable[str] | None = None
) -> list[str]:
    """The keys of `models` (one params section), each after every model of the section that teaches it.

    Links to other sections (a patriarch, a teacher) are roots; with `known` (see `known_models`)
    they are checked to exist. A cycle (gen1 <- gen2 <- gen1) or a dangling link is a KdpipeError.
    Ties keep params order.
    """
    known = None if known is None else set(known)
    deps = {n: _links(n, s, models, section, known) for n, s in models.items()}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n) :] + [n]
            raise KdpipeError(
                f"{section} teach each other in a cycle: {' <- '.join(cycle)}; break it in their teachers"
            )
        state[n] = 1
        for d in deps[n]:
            visit(d, path + [n])
        state[n] = 2
        order.append(n)

    for n in models:
        visit(n, [])
    return order


def lineage(name: str, models: Mapping[str, ModelParams], section: str = "generations") -> list[str]:
    """The chain that ends at `name`, root first: [patriarch link, gen1, ..., name].

    Each step follows the model's single teacher; the root is the first link outside the section
    (as written in params, e.g. `patriarchs/tol`) or a model without teachers. A model's generation
    number is its index in the list. Several teachers on one link is an error.
    """
    if name not in models:
        raise KdpipeError(f"no {section} entry {name!r}; known: {', '.join(models) or 'none'}")
    generation_order(models, section)  # rejects cycles and dangling links first
    chain = [name]
    while chain[0] in models and models[chain[0]].teachers:
        ts = models[chain[0]].teachers
        if len(ts) != 1:
            raise KdpipeError(
                f"{section}.{chain[0]} has {len(ts)} teachers; a generation has exactly one (the previous "
                "generation)"
            )
        chain.insert(0, ts[0].removeprefix(f"{section}/") if ts[0].startswith(f"{section}/") else ts[0])
    return chain
