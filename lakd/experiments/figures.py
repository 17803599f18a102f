"""The figures of an experiment report (PNG, matplotlib's Agg backend, written atomically).

* `ua_per_language.png`: UA per language and overall, one bar per variant: the mean over seeds, error bars
  ± 1 sd, each seed a dot.
* `per_class_recall.png`: recall of each class (all languages), one bar per variant, mean ± sd over seeds.
* `confusion.png`: one row-normalized confusion matrix per variant, side by side (counts summed over seeds).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lakd.io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _bars(ax, categories: Sequence[str], series: dict[str, list[dict]], ylabel: str) -> None:
    """Grouped bars: `series` = {variant label: [mean_sd per category]}; mean, ± sd, and the seeds as dots."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (label, stats) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        means = [100 * s["mean"] if s["mean"] is not None else np.nan for s in stats]
        sds = [100 * s["sd"] if s["sd"] is not None else 0.0 for s in stats]
        ax.bar(pos, means, width, yerr=sds, capsize=2, label=label, alpha=0.85)
        for p, s in zip(pos, stats):
            if len(s["values"]) > 1:
                ax.plot([p] * len(s["values"]), [100 * v for v in s["values"]], "k.", markersize=3)
    ax.set_xticks(x, categories)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(n, 4), loc="upper center", bbox_to_anchor=(0.5, -0.08))


def plot_ua_per_language(summary: dict, labels: dict[str, str], groups: Sequence[str], path: Path, seeds: int) -> Path:
    plt = _pyplot()
    cats = [*groups, "overall"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.4 * len(cats) * max(len(labels), 1), 4.2), dpi=120)
    _bars(ax, cats, {labels[v]: [summary[v][g]["ua"] for g in cats] for v in labels}, "UA (%)")
    ax.set_title(f"UA on test: mean ± sd over {seeds} seed(s)")
    return _save(fig, path)


def plot_per_class_recall(summary: dict, labels: dict[str, str], classes: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.4 * len(classes) * max(len(labels), 1), 4.2), dpi=120)
    series = {labels[v]: [summary[v]["overall"]["per_class_recall"][c] for c in classes] for v in labels}
    _bars(ax, classes, series, "recall (%)")
    ax.set_title("Per-class recall, all languages (mean ± sd over seeds)")
    return _save(fig, path)


def plot_confusions(confusions: dict[str, list], classes: Sequence[str], path: Path) -> Path:
    """Row-normalized confusion matrices (rows = reference), one panel per variant label."""
    plt = _pyplot()
    k = max(len(confusions), 1)
    c = len(classes)
    fig, axes = plt.subplots(1, k, figsize=(0.55 * c * k + 1.2 * k, 0.55 * c + 2.4), dpi=120, squeeze=False)
    for ax, (label, matrix) in zip(axes[0], confusions.items()):
        m = np.asarray(matrix, dtype=float)
        support = m.sum(1, keepdims=True)
        norm = np.divide(m, support, out=np.zeros_like(m), where=support > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(c), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(c), classes if ax is axes[0][0] else [""] * c, fontsize=7)
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    axes[0][0].set_ylabel("reference")
    fig.suptitle("Confusion (row-normalized %, summed over seeds; columns = prediction)", fontsize=9)
    return _save(fig, path)
