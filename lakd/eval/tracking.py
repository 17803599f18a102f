"""Evaluation results as experiment-tracking views: flat scalars for plots, and on W&B the confusion matrices as
images, W&B's interactive confusion-matrix chart and a per-class table.

    scalars = evaluation_scalars(grouped_metrics(...))  # what a dev evaluation returns to the trainer
    log_evaluation(logger, metrics, labels, "test", step, predictions=pred, figures=png_paths)

Scalar keys (under a prefix such as ``dev/`` or ``test/``): ``ua, wa, macro_f1, mean_ua``; per language
``ua_<lang>, wa_<lang>``; per class over all languages ``recall_<label>, precision_<label>, f1_<label>``; per class
and language ``recall_<label>_<lang>``. Undefined values (a class without reference samples) are left out.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _put(out: dict, key: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        out[key] = float(value)


def evaluation_scalars(metrics: Mapping) -> dict[str, float]:
    """Flat scalars of `grouped_metrics` output (see the module docstring for the keys)."""
    out: dict[str, float] = {}
    overall = metrics["overall"]
    for key in ("ua", "wa", "macro_f1"):
        _put(out, key, overall.get(key))
    _put(out, "mean_ua", metrics.get("mean_ua"))
    for lang, entry in metrics["groups"].items():
        _put(out, f"ua_{lang}", entry.get("ua"))
        _put(out, f"wa_{lang}", entry.get("wa"))
    for what in ("recall", "precision", "f1"):
        for label, value in (overall.get(f"per_class_{what}") or {}).items():
            _put(out, f"{what}_{label}", value)
    for lang, entry in metrics["groups"].items():
        for label, value in (entry.get("per_class_recall") or {}).items():
            _put(out, f"recall_{label}_{lang}", value)
    return out


def per_class_table(metrics: Mapping, labels: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows (one per language and class, then "overall"): support, recall, precision, F1."""
    columns = ["language", "class", "support", "recall", "precision", "f1"]
    rows = []
    for group, entry in [*sorted(metrics["groups"].items()), ("overall", metrics["overall"])]:
        for label in labels:
            rows.append(
                [
                    group,
                    label,
                    (entry.get("support") or {}).get(label),
                    (entry.get("per_class_recall") or {}).get(label),
                    (entry.get("per_class_precision") or {}).get(label),
                    (entry.get("per_class_f1") or {}).get(label),
                ]
            )
    return columns, rows


def confusion_images(
    metrics: Mapping, labels: Sequence[str], directory: str | Path, groups: bool = True
) -> dict[str, Path]:
    """Row-normalised confusion PNGs (overall, and each language with `groups`) drawn into `directory`."""
    from lakd.eval.report import plot_confusion

    entries = [("overall", metrics["overall"])] + (sorted(metrics["groups"].items()) if groups else [])
    return {
        name: plot_confusion(
            e["confusion_normalized"],
            labels,
            Path(directory) / f"{name}_normalized.png",
            normalized=True,
            title=f"{name} (row-normalized %, n={e['n']})",
        )
        for name, e in entries
    }


def log_evaluation(
    logger,
    metrics: Mapping,
    labels: Sequence[str],
    prefix: str,
    step: int,
    *,
    predictions: Mapping | None = None,
    figures: Mapping[str, str | Path] | None = None,
    groups: bool = True,
    scalars: bool = True,
    summary: bool = False,
) -> None:
    """Log one evaluation to a `RunLogger`: scalars (metrics.jsonl and W&B), and on W&B the confusion images
    (`figures` {group: png} when already drawn, else drawn here), the per-class table and, with `predictions`
    (``y_true``, ``y_pred`` label indices), W&B's confusion-matrix chart. `summary` also sets the run summary."""
    values = evaluation_scalars(metrics)
    if scalars:
        logger.log(values, step=step, prefix=f"{prefix}/", console=False)
    if summary:
        logger.summary({f"{prefix}/{k}": v for k, v in values.items()})
    if logger.wandb_run is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        pngs = dict(figures) if figures else confusion_images(metrics, labels, tmp, groups=groups)
        logger.log_images({f"{prefix}/confusion/{g}": p for g, p in pngs.items()}, step=step)
    columns, rows = per_class_table(metrics, labels)
    logger.log_table(f"{prefix}/per_class", columns, rows, step=step)
    if predictions is not None:
        logger.log_confusion_matrix(
            f"{prefix}/confusion_matrix",
            [int(x) for x in predictions["y_true"]],
            [int(x) for x in predictions["y_pred"]],
            list(labels),
            step=step,
        )


def log_report_run(cfg, report: Mapping, out_dir: str | Path, name: str, tags: Sequence[str] = ()) -> None:
    """A test evaluation as its own W&B run (job_type "evaluate", in the run's group): scalars, run summary,
    confusion images per language and overall, per-class table and confusion chart. Nothing when W&B is off."""
    from lakd.train.logging import RunLogger, wandb_settings

    if wandb_settings(cfg.wandb, out_dir)["mode"] == "disabled":  # the environment wins over the config
        return
    split = Path(out_dir).name
    with RunLogger(
        out_dir,
        cfg.to_dict(),
        cfg.wandb,
        name=name,
        group=cfg.wandb.group or cfg.name,
        console=False,
        job_type="evaluate",
        tags=["evaluate", *tags],
    ) as logger:
        log_evaluation(
            logger,
            report["metrics"],
            report["labels"],
            split,
            step=0,
            predictions=report.get("predictions"),
            summary=True,
        )
