"""Classification metrics for speech emotion recognition: WA, UA, per-class recall, confusion, bootstrap CIs.

Conventions (the ones SER papers use):

- **WA** (weighted accuracy) = plain accuracy = recall averaged with class-frequency weights.
- **UA** (unweighted accuracy) = macro-averaged recall over the classes *present in y_true*. A class with no
  reference sample has no defined recall; it is reported as ``None`` in ``per_class_recall`` and left out of
  UA (counting it as 0 would punish a language/split that lacks that emotion).
- **macro_f1** = mean F1 over the classes present in y_true (F1 of a class never predicted is 0).
- Per class: recall (``None`` without reference samples), precision (``None`` when never predicted: undefined),
  F1 (``None`` without reference samples; precision counts as 0 for a class never predicted, as in macro_f1).
- Confusion matrices are ``[true, pred]`` (rows = reference); the row-normalized matrix divides each row by
  its support (rows without support stay 0).

Inputs are label indices (ints into ``labels``) or label names; both may be mixed across calls but not
within one sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_indices(values: Sequence, labels: Sequence[str], what: str) -> np.ndarray:
    """Label names or indices -> int64 indices into `labels`, with an error naming the bad value."""
    arr = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if not arr:
        return np.zeros(0, dtype=np.int64)
    if isinstance(arr[0], str):
        lookup = {name: i for i, name in enumerate(labels)}
        try:
            return np.asarray([lookup[v] for v in arr], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"{what}: label {e.args[0]!r} is not one of {list(labels)}") from None
    out = np.asarray(arr, dtype=np.int64)
    bad = (out < 0) | (out >= len(labels))
    if bad.any():
        raise ValueError(f"{what}: index {int(out[bad][0])} is outside 0..{len(labels) - 1} (labels {list(labels)})")
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts `[true, pred]` as int64 (rows = reference class)."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ua_wa_from_confusion(cm: np.ndarray) -> tuple[float, float]:
    support = cm.sum(1)
    total = support.sum()
    if total == 0:
        return float("nan"), float("nan")
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return float(recall.mean()), float(np.trace(cm) / total)


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: mean recall over the classes present in y_true (index arrays)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    n = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    return _ua_wa_from_confusion(confusion_matrix(y_true, y_pred, max(n, 1)))[0]


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: plain accuracy (index arrays)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


_NAMED_METRICS: dict[str, MetricFn] = {"ua": unweighted_accuracy, "wa": weighted_accuracy}


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence[str]) -> dict:
    """WA, UA, macro-F1, per-class recall/precision/F1/support and confusion matrices (counts and row-normalized).

    Returns plain Python types (JSON-serialisable): ``n, wa, ua, macro_f1, per_class_recall {label: float|None},
    per_class_precision {label: float|None}, per_class_f1 {label: float|None}, support {label: int},
    predicted {label: int}, classes_present [label], labels, confusion [[int]], confusion_normalized [[float]]``.
    """
    labels = list(labels)
    t = _as_indices(y_true, labels, "y_true")
    p = _as_indices(y_pred, labels, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items but y_pred has {len(p)}")
    c = len(labels)
    cm = confusion_matrix(t, p, c)
    support = cm.sum(1)
    predicted = cm.sum(0)
    ua, wa = _ua_wa_from_confusion(cm)
    recall: dict[str, float | None] = {}
    precision: dict[str, float | None] = {}
    f1: dict[str, float | None] = {}
    for i, name in enumerate(labels):
        precision[name] = float(cm[i, i] / predicted[i]) if predicted[i] else None
        if support[i] == 0:
            recall[name] = f1[name] = None
            continue
        r = cm[i, i] / support[i]
        recall[name] = float(r)
        prec = precision[name] or 0.0
        f1[name] = 0.0 if r + prec == 0 else float(2 * r * prec / (r + prec))
    f1s = [v for v in f1.values() if v is not None]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(support[:, None] > 0, cm / np.maximum(support[:, None], 1), 0.0)
    return {
        "n": int(len(t)),
        "wa": wa,
        "ua": ua,
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "per_class_recall": recall,
        "per_class_precision": precision,
        "per_class_f1": f1,
        "support": {name: int(support[i]) for i, name in enumerate(labels)},
        "predicted": {name: int(predicted[i]) for i, name in enumerate(labels)},
        "classes_present": [name for i, name in enumerate(labels) if support[i] > 0],
        "labels": labels,
        "confusion": cm.astype(int).tolist(),
        "confusion_normalized": norm.astype(float).tolist(),
    }


def _resolve_metric(metric: str | MetricFn) -> MetricFn:
    if callable(metric):
        return metric
    try:
        return _NAMED_METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(_NAMED_METRICS)} or a callable") from None


MIN_CLUSTERS = 5  # fewer speakers than this: a speaker bootstrap is degenerate (one speaker -> zero width)


def bootstrap_ci(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    metric: str | MetricFn = "ua",
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    clusters: Sequence[Hashable] | None = None,
    min_clusters: int = MIN_CLUSTERS,
) -> dict:
    """Percentile bootstrap confidence interval of `metric` ("ua", "wa" or `f(y_true, y_pred) -> float`).

    Without `clusters`, utterances are resampled with replacement. With `clusters` (one speaker id per
    utterance), whole speakers are resampled with replacement and each drawn speaker contributes all of
    their utterances: utterances of one speaker are not independent, so the speaker-clustered interval is
    the honest one for speaker-independent test sets (and is wider). With fewer than `min_clusters` speakers
    the speaker bootstrap degenerates (a single speaker gives a zero-width interval), so utterances are
    resampled instead and `clustered` is False. UA of a resample uses the classes present in that resample.
    Returns ``{point, low, high, n, alpha, clustered}``.
    """
    if n < 1:
        raise ValueError(f"bootstrap n must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items but y_pred has {len(p)}")
    if len(t) == 0:
        return {
            "point": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "n": n,
            "alpha": alpha,
            "clustered": clusters is not None,
        }
    fn = _resolve_metric(metric)
    point = float(fn(t, p))
    rng = np.random.default_rng(seed)
    stats = np.empty(n)
    fast = metric in ("ua", "wa")
    c = int(max(t.max(), p.max())) + 1
    if clusters is None:
        groups = None
    else:
        cl = list(clusters)
        if len(cl) != len(t):
            raise ValueError(f"clusters has {len(cl)} items but y_true has {len(t)}")
        _, inverse = np.unique(np.asarray([str(x) for x in cl]), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        groups = np.split(order, bounds)
        if len(groups) < min_clusters:
            groups = None
    for b in range(n):
        if groups is None:
            idx = rng.integers(0, len(t), len(t))
        else:
            pick = rng.integers(0, len(groups), len(groups))
            idx = np.concatenate([groups[g] for g in pick])
        if fast:
            ua, wa = _ua_wa_from_confusion(confusion_matrix(t[idx], p[idx], c))
            stats[b] = ua if metric == "ua" else wa
        else:
            stats[b] = fn(t[idx], p[idx])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {
        "point": point,
        "low": float(low),
        "high": float(high),
        "n": n,
        "alpha": alpha,
        "clustered": groups is not None,
    }


def grouped_metrics(
    y_true: Sequence,
    y_pred: Sequence,
    groups: Sequence[str],
    labels: Sequence[str],
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    clusters: Sequence[Hashable] | None = None,
) -> dict:
    """Metrics overall and per group (language): ``{"overall": {...}, "groups": {lang: {...}}, "mean_ua": float}``.

    ``mean_ua`` is the unweighted mean of the per-language UAs (each language counts equally, whatever its
    test-set size). With ``n_bootstrap > 0`` each entry also gets ``ua_ci`` and ``wa_ci`` from `bootstrap_ci`
    (speaker-clustered when `clusters` is given).
    """
    labels = list(labels)
    t = _as_indices(y_true, labels, "y_true")
    p = _as_indices(y_pred, labels, "y_pred")
    g = np.asarray([str(x) for x in groups])
    if not (len(t) == len(p) == len(g)):
        raise ValueError(f"y_true ({len(t)}), y_pred ({len(p)}) and groups ({len(g)}) must have the same length")
    cl = None if clusters is None else np.asarray([str(x) for x in clusters])
    if cl is not None and len(cl) != len(t):
        raise ValueError(f"clusters has {len(cl)} items but y_true has {len(t)}")

    def entry(mask: np.ndarray) -> dict:
        m = classification_metrics(t[mask], p[mask], labels)
        if n_bootstrap > 0:
            sub_cl = None if cl is None else cl[mask]
            for name in ("ua", "wa"):
                m[f"{name}_ci"] = bootstrap_ci(
                    t[mask], p[mask], name, n=n_bootstrap, seed=seed, alpha=alpha, clusters=sub_cl
                )
        return m

    result = {
        "overall": entry(np.ones(len(t), dtype=bool)),
        "groups": {name: entry(g == name) for name in sorted(set(g.tolist()))},
    }
    uas = [v["ua"] for v in result["groups"].values()]
    result["mean_ua"] = float(np.mean(uas)) if uas else float("nan")
    return result
