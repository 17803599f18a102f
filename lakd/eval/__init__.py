"""Evaluation: SER metrics (WA, UA, per-class recall, confusion, bootstrap CIs) and reports."""

from lakd.eval.metrics import bootstrap_ci, classification_metrics, confusion_matrix, grouped_metrics

__all__ = ["bootstrap_ci", "classification_metrics", "confusion_matrix", "grouped_metrics"]
