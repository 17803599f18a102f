"""Paired comparison of two systems on the same test utterances, over one or several seeds.

Two runs evaluated on the same test set are not independent samples: most utterances are easy or hard for both.
Comparing their two confidence intervals (overlap or not) throws that pairing away and is far too conservative;
the paired difference is what tells a real gain from noise.

For seeds s = 1..S and the same N test utterances (same order for every run):

    d = mean_s [ M(y, b_s) - M(y, a_s) ]          M = UA (macro recall) or WA

- **CI**: a paired percentile bootstrap of d. One resample of the test set (whole speakers with replacement when
  there are at least `min_clusters` of them, else utterances) is applied to both systems and every seed, so
  utterance difficulty and speaker effects cancel in the difference.
- **p-value**: a paired permutation (randomisation) test of the sharp null "for every utterance and seed, the two
  systems' predictions are exchangeable": each (seed, utterance) pair is swapped between A and B with
  probability 1/2. It tests UA directly (McNemar's test only covers accuracy, since UA is not a sum over
  utterances) and uses every seed. Two-sided, with the +1 correction so p is never 0.

Seeds enter as repeated measurements of the same comparison: d averages the per-seed differences (their sd is
reported too), so the test answers "is B better than A on this test set, averaged over training randomness".
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from lakd.eval.metrics import MIN_CLUSTERS, _ua_wa_from_confusion, confusion_matrix

PAIRED_METRICS = ("ua", "wa")


def _as_seed_matrix(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be [utterances] or [seeds, utterances], got shape {arr.shape}")
    return arr


def _metric_per_seed(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, c: int, metric: str) -> np.ndarray:
    """M(y[s, idx], pred[s, idx]) for every seed s -> [S]."""
    out = np.empty(pred.shape[0])
    for s in range(pred.shape[0]):
        ua, wa = _ua_wa_from_confusion(confusion_matrix(y[s, idx], pred[s, idx], c))
        out[s] = ua if metric == "ua" else wa
    return out


def _cluster_groups(clusters: Sequence[Hashable] | None, n: int, min_clusters: int) -> list[np.ndarray] | None:
    if clusters is None:
        return None
    cl = [str(x) for x in clusters]
    if len(cl) != n:
        raise ValueError(f"clusters has {len(cl)} items but there are {n} utterances")
    _, inverse = np.unique(np.asarray(cl), return_inverse=True)
    groups = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    return groups if len(groups) >= min_clusters else None


def paired_comparison(
    y_true,
    pred_a,
    pred_b,
    *,
    metric: str = "ua",
    clusters: Sequence[Hashable] | None = None,
    n_bootstrap: int = 2000,
    n_permutations: int = 5000,
    alpha: float = 0.05,
    seed: int = 0,
    min_clusters: int = MIN_CLUSTERS,
) -> dict:
    """Paired difference B − A in `metric` with a bootstrap CI and a permutation p-value (see the module doc).

    `y_true`: `[N]` (same references for every seed) or `[S, N]`; `pred_a`, `pred_b`: `[N]` or `[S, N]` label
    indices, row s = seed s, columns in the same utterance order for both systems. `clusters`: a speaker id per
    utterance (the bootstrap resamples speakers when there are at least `min_clusters`).
    Returns ``{metric, diff, low, high, p_value, a_mean, b_mean, a_sd, b_sd, diff_sd, per_seed_diff, n, seeds,
    clustered, test, n_bootstrap, n_permutations, alpha}``.
    """
    if metric not in PAIRED_METRICS:
        raise ValueError(f"paired metric must be one of {PAIRED_METRICS}, got {metric!r}")
    a = _as_seed_matrix(pred_a, "pred_a")
    b = _as_seed_matrix(pred_b, "pred_b")
    if a.shape != b.shape:
        raise ValueError(f"pred_a {a.shape} and pred_b {b.shape} must cover the same seeds and utterances")
    y = _as_seed_matrix(y_true, "y_true")
    if y.shape[0] == 1 and a.shape[0] > 1:
        y = np.repeat(y, a.shape[0], axis=0)
    if y.shape != a.shape:
        raise ValueError(f"y_true {y.shape} does not match the predictions {a.shape}")
    n_seeds, n = a.shape
    if n == 0:
        raise ValueError("no utterances to compare")
    c = int(max(y.max(), a.max(), b.max())) + 1
    everything = np.arange(n)
    ma, mb = _metric_per_seed(y, a, everything, c, metric), _metric_per_seed(y, b, everything, c, metric)
    per_seed = mb - ma
    diff = float(per_seed.mean())
    rng = np.random.default_rng(seed)

    groups = _cluster_groups(clusters, n, min_clusters)
    boot = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        boot[i] = (_metric_per_seed(y, b, idx, c, metric) - _metric_per_seed(y, a, idx, c, metric)).mean()
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if n_bootstrap else (float("nan"),) * 2

    extreme = 0
    differ = a != b
    for _ in range(n_permutations):
        swap = (rng.random(a.shape) < 0.5) & differ  # swapping equal predictions changes nothing
        pa, pb = np.where(swap, b, a), np.where(swap, a, b)
        d = (_metric_per_seed(y, pb, everything, c, metric) - _metric_per_seed(y, pa, everything, c, metric)).mean()
        extreme += abs(d) >= abs(diff) - 1e-12
    p_value = (extreme + 1) / (n_permutations + 1)

    return {
        "metric": metric,
        "diff": diff,
        "low": float(low),
        "high": float(high),
        "p_value": float(p_value),
        "a_mean": float(ma.mean()),
        "b_mean": float(mb.mean()),
        "a_sd": float(ma.std(ddof=1)) if n_seeds > 1 else 0.0,
        "b_sd": float(mb.std(ddof=1)) if n_seeds > 1 else 0.0,
        "diff_sd": float(per_seed.std(ddof=1)) if n_seeds > 1 else 0.0,
        "per_seed_diff": [float(x) for x in per_seed],
        "n": int(n),
        "seeds": int(n_seeds),
        "clustered": groups is not None,
        "test": "paired permutation (swap per seed × utterance), two-sided",
        "n_bootstrap": int(n_bootstrap),
        "n_permutations": int(n_permutations),
        "alpha": alpha,
    }


def align_predictions(runs: Sequence[dict], keys: Sequence[str] | None = None) -> tuple[list[str], list[dict]]:
    """Put several prediction dicts (``keys, y_true, y_pred, …``) in one utterance order; refuse mismatched sets.

    Paired statistics are only valid on the same utterances: a run that lacks or adds a test key is an error
    naming the first difference, never a silent intersection.
    """
    if not runs:
        raise ValueError("no runs to align")
    order = list(keys) if keys is not None else sorted(runs[0]["keys"])
    want = set(order)
    aligned = []
    for i, r in enumerate(runs):
        got = list(r["keys"])
        if set(got) != want or len(got) != len(want):
            missing, extra = sorted(want - set(got)), sorted(set(got) - want)
            raise ValueError(
                f"run {i} was evaluated on other utterances: {len(missing)} missing (e.g. {missing[:1]}), "
                f"{len(extra)} extra (e.g. {extra[:1]}), {len(got) - len(set(got))} duplicated"
            )
        pos = {k: j for j, k in enumerate(got)}
        take = [pos[k] for k in order]
        aligned.append({k: [r[k][j] for j in take] for k in ("y_true", "y_pred", "languages", "speakers") if k in r})
    return order, aligned
