"""Print README's method-comparison tables from a finished `profiles/methods.yaml` run.

    cp profiles/methods.yaml params.yaml && dvc repro && python profiles/methods_tables.py

Reads results/evaluate/models.json (test top-1 of every model, last epoch), results/refine-targets and
results/probe-teachers. Every row is mean ± sample std over the three seeds `_s0.._s2`; "Δ vs scratch" is
the mean ± std of the per-seed difference to `scratch_s<k>` (same seed: same initialisation and batch order,
so the seed-to-seed noise common to both cancels). Generations: a tolerant model against the strict model
at the same position (same seeds), a strict model against the strict patriarch (the one-generation baseline).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

RESULTS = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
SEEDS = range(3)
TABLES = {
    "Catalogue (issue 5)": [
        "scratch",
        "kd_best",
        "kd",
        "kd_t4",
        "at",
        "fitnet",
        "dkd",
        "dml",
        "kd_aver",
        "kd_ebkd",
        "kd_camkd",
    ],
    "Professor (issue 6)": [
        "scratch",
        "kd_best",
        "prof_replace",
        "prof_joint",
        "dkd",
        "prof_dkd",
        "kd_large",
    ],
    "Multi-teacher and GPAC (issue 8)": [
        "scratch",
        "kd_best",
        "kd",
        "kd_aver",
        "kd_ebkd",
        "kd_camkd",
        "gpac",
        "gpac_noprobe",
        "gpac_noadapt",
        "gpac_flatbeta",
    ],
    "IE-KD (issue 9)": ["scratch", "kd_best", "inherit_only", "ie_kd", "ie_kd_kd", "dml", "ie_dml"],
    "Generations (issue 7)": [
        "tol_p",
        "tol_g1",
        "tol_g2",
        "tol_ens",
        "strict_p",
        "strict_g1",
        "strict_g2",
        "strict_ens",
    ],
}


def pm(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}"


def main() -> None:
    ev = json.loads((RESULTS / "evaluate" / "models.json").read_text())
    top1 = lambda name: [ev[f"{name}_s{s}"]["top1"] for s in SEEDS]  # noqa: E731
    teachers = {k: v for k, v in ev.items() if v.get("kind") == "teacher"}
    print(
        "Teachers (test top-1 %): "
        + ", ".join(
            f"{k} {100 * v['top1']:.2f} ({v['arch']}, {v['params']:,} params)" for k, v in teachers.items()
        )
    )
    for title, names in TABLES.items():
        print(
            f"\n**{title}**\n\n| model | method | teachers / targets | test top-1 % | Δ (paired) | per seed |\n|---|---|---|---:|---:|---|"
        )
        for n in names:
            # generations: tolerant vs the strict model at the same position; strict chain vs its own patriarch
            base = (
                "strict" + n[3:]
                if n.startswith("tol_")
                else "strict_p"
                if n.startswith("strict_")
                else "scratch"
            )
            if f"{n}_s0" not in ev or f"{base}_s0" not in ev:
                continue
            d = [a - b for a, b in zip(top1(n), top1(base))]
            m = ev[f"{n}_s0"]
            delta = "—" if n == base else f"{100 * statistics.mean(d):+.2f} ± {100 * statistics.stdev(d):.2f}"
            print(
                f"| {n} | {m.get('method', '')} | {m.get('sources', '')} | {pm(top1(n))} | {delta} | "
                f"{' / '.join(f'{100 * x:.2f}' for x in top1(n))} |"
            )
    for f in sorted((RESULTS / "refine-targets").glob("*/metrics.json")):
        r = json.loads(f.read_text())
        print(
            f"\nProfessor on {f.parent.name} ({r['professor_params']:,} params): "
            + "; ".join(
                f"{split}: teacher top-1 {100 * r[split]['teacher_top1']:.2f}, refined top-1 {100 * r[split]['refined_top1']:.2f}, "
                f"KL(refined‖teacher) {r[split]['kl_refined_teacher']:.3f}, non-target corr {r[split]['nontarget_corr']:.3f}"
                for split in ("train", "val")
            )
        )
    probes = RESULTS / "probe-teachers" / "metrics.json"
    if probes.is_file():
        p = json.loads(probes.read_text())
        layers = list(next(iter(p["acc"].values())))
        print("\n**Probe accuracy on the validation split** (chosen teacher per layer in bold)\n")
        print("| teacher | " + " | ".join(layers) + " |\n|---|" + "---:|" * len(layers))
        for t, accs in p["acc"].items():
            cells = [
                f"**{100 * accs[k]:.1f}**" if p["choice_teacher"][k] == t else f"{100 * accs[k]:.1f}"
                for k in layers
            ]
            print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
