"""An experiment's statistics: per run and seed, across seeds (mean ± sd), and paired against a baseline.

* Per run and seed: UA and WA per language and overall, per-class recall, confusion counts (the evaluate
  unit's metrics.json).
* Across seeds: mean and sample sd (ddof = 1; 0 with one seed) of each of those numbers.
* Paired: lakd.eval.paired on the same test utterances, every seed at once ([seeds, utterances]): the mean
  per-seed difference (variant − baseline) with a paired-bootstrap CI (speakers resampled when there are
  enough) and a paired permutation p-value. Holm's step-down correction runs over all comparisons of the
  report (variants × overall and each language); a difference is *significant* when its Holm-adjusted p is
  below alpha (its CI then nearly always excludes 0 too).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lakd.eval.paired import paired_comparison


def mean_sd(values: Sequence[float | None]) -> dict:
    """{"mean", "sd", "n", "values"}; undefined values (a class absent from a language) are left out."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "sd": sd, "n": len(vals), "values": vals}


def run_metrics(report: dict) -> dict:
    """The numbers of one run and seed from an evaluation report (metrics.json)."""
    m = report["metrics"]

    def entry(e: dict) -> dict:
        return {"ua": e.get("ua"), "wa": e.get("wa"), "n": e.get("n"), "per_class_recall": e.get("per_class_recall")}

    return {
        "overall": {**entry(m["overall"]), "confusion": m["overall"]["confusion"]},
        "groups": {g: entry(e) for g, e in m["groups"].items()},
        "mean_ua": m.get("mean_ua"),
    }


def across_seeds(per_seed: dict[str, dict], groups: Sequence[str], labels: Sequence[str]) -> dict:
    """{group: {ua, wa: mean_sd, per_class_recall: {label: mean_sd}}} plus the confusion counts summed over
    seeds (overall) and the mean of the per-language mean UA."""
    out: dict = {}
    for g in [*groups, "overall"]:
        entries = [r["overall"] if g == "overall" else r["groups"].get(g) for r in per_seed.values()]
        entries = [e for e in entries if e]
        out[g] = {
            "ua": mean_sd([e["ua"] for e in entries]),
            "wa": mean_sd([e["wa"] for e in entries]),
            "per_class_recall": {
                label: mean_sd([(e["per_class_recall"] or {}).get(label) for e in entries]) for label in labels
            },
        }
    matrices = [np.asarray(r["overall"]["confusion"]) for r in per_seed.values()]
    out["confusion"] = np.sum(matrices, axis=0).astype(int).tolist() if matrices else None
    out["mean_ua"] = mean_sd([r.get("mean_ua") for r in per_seed.values()])
    return out


def read_predictions(path: str | Path, labels: Sequence[str]) -> dict:
    """predictions.csv of an evaluation report -> {key: (y_true, y_pred, language, speaker)}."""
    index = {name: i for i, name in enumerate(labels)}
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[r["key"]] = (index[r["label"]], index[r["prediction"]], r["language"], r["speaker"] or None)
    return rows


def paired_against(
    baseline: dict[str, dict],
    variant: dict[str, dict],
    group: str,
    *,
    metric: str = "ua",
    n_bootstrap: int = 1000,
    n_permutations: int = 5000,
    alpha: float = 0.05,
) -> dict | None:
    """Paired comparison of `variant` with `baseline` ({seed: predictions by key}) on `group` (a language or
    "overall"), over the seeds both have, on the utterances every one of those runs scored."""
    seeds = sorted(set(baseline) & set(variant), key=int)
    if not seeds:
        return None
    runs = [baseline[s] for s in seeds] + [variant[s] for s in seeds]
    common = set.intersection(*(set(r) for r in runs))
    everything = set.union(*(set(r) for r in runs))
    first = baseline[seeds[0]]
    keys = sorted(k for k in common if group == "overall" or first[k][2] == group)
    if not keys:
        return None
    y = np.asarray([[baseline[s][k][0] for k in keys] for s in seeds])
    a = np.asarray([[baseline[s][k][1] for k in keys] for s in seeds])
    b = np.asarray([[variant[s][k][1] for k in keys] for s in seeds])
    speakers = [first[k][3] for k in keys]
    result = paired_comparison(
        y,
        a,
        b,
        metric=metric,
        clusters=speakers if all(speakers) else None,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        alpha=alpha,
    )
    language = {k: row[2] for r in runs for k, row in r.items()}
    excluded = sum(1 for k in everything - common if group in ("overall", language[k]))
    return {**result, "seed_list": [int(s) for s in seeds], "n_excluded": excluded}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_all(
    predictions: dict[str, dict[str, dict]],
    baseline: str,
    groups: Sequence[str],
    *,
    metric: str = "ua",
    n_bootstrap: int = 1000,
    n_permutations: int = 5000,
    alpha: float = 0.05,
) -> dict:
    """{variant: {group: paired result + p_holm + significant}} for every variant but the baseline."""
    out: dict[str, dict] = {}
    flat = []
    for name, by_seed in predictions.items():
        if name == baseline or baseline not in predictions:
            continue
        for g in [*groups, "overall"]:
            r = paired_against(
                predictions[baseline],
                by_seed,
                g,
                metric=metric,
                n_bootstrap=n_bootstrap,
                n_permutations=n_permutations,
                alpha=alpha,
            )
            if r is not None:
                out.setdefault(name, {})[g] = r
                flat.append(r)
    for r, p in zip(flat, holm([r["p_value"] for r in flat])):
        r["p_holm"] = p
        r["significant"] = bool(p < alpha)
    return out
