"""Evaluation reports: one JSON with every number, a markdown summary, confusion-matrix PNGs and a
per-utterance predictions CSV (for significance tests between systems).

    report = build_report(pred, labels, n_bootstrap=1000, seed=0, title="student/best on test")
    write_report(report, "runs/demo/eval/student/test")

`pred` is what `lakd.recipes.evaluate.predict_shards` returns: ``y_true``, ``y_pred`` (label indices),
``languages``, and optionally ``keys``, ``speakers`` (enables the speaker-clustered bootstrap) and ``probs``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lakd.eval.metrics import MIN_CLUSTERS, grouped_metrics
from lakd.io import atomic_write_bytes

REPORT_JSON = "metrics.json"
REPORT_MD = "report.md"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_DIR = "confusion"


def _speakers_usable(speakers: Sequence | None, n: int) -> bool:
    return speakers is not None and len(speakers) == n and n > 0 and all(s not in (None, "") for s in speakers)


def build_report(
    pred: Mapping[str, Any],
    labels: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    title: str = "",
    cluster_by_speaker: bool = True,
) -> dict:
    """Compute the metric set (per language + overall, with bootstrap CIs) from predictions.

    CIs resample speakers when every utterance has a speaker id and `cluster_by_speaker` is true,
    otherwise utterances (the report records which).
    """
    labels = list(labels)
    y_true = [int(x) for x in pred["y_true"]]
    y_pred = [int(x) for x in pred["y_pred"]]
    languages = [str(x) for x in pred["languages"]]
    speakers = pred.get("speakers")
    clustered = cluster_by_speaker and _speakers_usable(speakers, len(y_true))
    metrics = grouped_metrics(
        y_true,
        y_pred,
        languages,
        labels,
        n_bootstrap=n_bootstrap,
        seed=seed,
        alpha=alpha,
        clusters=list(speakers) if clustered else None,
    )
    report = {
        "title": title,
        "labels": labels,
        "n": len(y_true),
        "bootstrap": {
            "n": n_bootstrap,
            "seed": seed,
            "alpha": alpha,
            "unit": "speaker" if clustered else "utterance",
            "min_speakers": MIN_CLUSTERS,
        },
        "metrics": metrics,
    }
    probs = pred.get("probs")
    report["predictions"] = {
        "keys": [str(k) for k in pred.get("keys", [""] * len(y_true))],
        "languages": languages,
        "speakers": [None if s is None else str(s) for s in (speakers or [None] * len(y_true))],
        "y_true": y_true,
        "y_pred": y_pred,
        "probs": None if probs is None else np.asarray(probs, dtype=float).tolist(),
    }
    return report


# ----------------------------------------------------------------------------------------------- tables


def _cell(value: Any, float_fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else float_fmt.format(value)
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    fmt: str = "markdown",
    title: str | None = None,
    float_fmt: str = "{:.3f}",
):
    """Render rows (dicts) as a markdown table (``fmt="markdown"``, returns str), aligned plain text
    (``"plain"``, str) or a ``rich.table.Table`` (``"rich"``) for console output.

    Columns default to the keys of the first row, in order; missing cells show "–".
    """
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    cells = [[_cell(r.get(c), float_fmt) for c in columns] for r in rows]
    if fmt == "rich":
        from rich.table import Table

        table = Table(title=title)
        for i, c in enumerate(columns):
            table.add_column(str(c), justify="left" if i == 0 else "right")
        for row in cells:
            table.add_row(*row)
        return table
    if fmt == "markdown":
        lines = [f"**{title}**", ""] if title else []
        lines.append("| " + " | ".join(str(c) for c in columns) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    if fmt == "plain":
        widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

        def fmt_row(vals):
            return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))

        lines = ([title] if title else []) + [fmt_row([str(c) for c in columns])] + [fmt_row(r) for r in cells]
        return "\n".join(lines) + "\n"
    raise ValueError(f"format_table: fmt must be markdown, plain or rich, got {fmt!r}")


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _with_ci(entry: Mapping, name: str) -> str:
    text = _pct(entry.get(name))
    ci = entry.get(f"{name}_ci")
    if ci:
        text += f" [{_pct(ci['low'])}, {_pct(ci['high'])}]"
    return text


def summary_rows(report: Mapping) -> list[dict]:
    """One row per language plus "overall": n, UA and WA in percent (with CIs when computed), macro-F1."""
    m = report["metrics"]
    entries = list(m["groups"].items()) + [("overall", m["overall"])]
    return [
        {
            "language": name,
            "n": e["n"],
            "UA %": _with_ci(e, "ua"),
            "WA %": _with_ci(e, "wa"),
            "macro-F1 %": _pct(e.get("macro_f1")),
        }
        for name, e in entries
    ]


def per_class_rows(report: Mapping, metric: str = "recall") -> list[dict]:
    """One per-class metric (recall | precision | f1, percent) per language and overall: classes as columns."""
    m = report["metrics"]
    entries = list(m["groups"].items()) + [("overall", m["overall"])]
    return [
        {
            "language": name,
            **{label: _pct((e.get(f"per_class_{metric}") or {}).get(label)) for label in report["labels"]},
        }
        for name, e in entries
    ]


def class_rows(report: Mapping, group: str = "overall") -> list[dict]:
    """Recall, precision and F1 (percent) side by side for each class of one group (a language or "overall")."""
    m = report["metrics"]
    e = m["overall"] if group == "overall" else m["groups"][group]
    return [
        {
            "class": label,
            "n": e["support"][label],
            "recall %": _pct(e["per_class_recall"][label]),
            "precision %": _pct((e.get("per_class_precision") or {}).get(label)),
            "F1 %": _pct((e.get("per_class_f1") or {}).get(label)),
        }
        for label in report["labels"]
    ]


def to_markdown(report: Mapping, confusion_files: Mapping[str, Mapping[str, str]] | None = None) -> str:
    b = report["bootstrap"]
    parts = [f"# Evaluation: {report['title']}" if report.get("title") else "# Evaluation", ""]
    parts.append(
        f"{report['n']} utterances. UA = mean recall over the classes present; WA = accuracy. "
        + (
            f"Brackets: {100 * (1 - b['alpha']):.0f}% percentile bootstrap CI ({b['n']} resamples of "
            f"{b['unit']}s, seed {b['seed']}"
            + (
                f"; utterances where a group has fewer than {b.get('min_speakers', 5)} speakers"
                if b["unit"] == "speaker"
                else ""
            )
            + ")."
            if b["n"]
            else "No bootstrap CIs."
        )
    )
    parts.append(f"Mean UA over languages: {_pct(report['metrics']['mean_ua'])}%.")
    skipped = report.get("skipped") or {}
    if skipped.get("total"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.get("counts", {}).items()))
        parts.append(f"**{skipped['total']} sample(s) skipped and not scored** ({reasons}); metrics.json lists them.")
    parts += [
        "",
        format_table(summary_rows(report), title="UA / WA"),
        "",
        format_table(class_rows(report), title="Per class, all languages: recall, precision, F1"),
        "",
        format_table(per_class_rows(report, "recall"), title="Recall per class (%)"),
        "",
        format_table(per_class_rows(report, "precision"), title="Precision per class (%)"),
        "",
        format_table(per_class_rows(report, "f1"), title="F1 per class (%)"),
    ]
    if confusion_files:
        parts += ["", "## Confusion matrices (rows = reference, columns = prediction)", ""]
        for name, files in confusion_files.items():
            parts.append(f"**{name}**: [counts]({files['counts']}) · [row-normalized]({files['normalized']})")
            parts.append("")
            parts.append(f"![{name}]({files['normalized']})")
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- figures


def plot_confusion(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], path: str | Path, *, normalized: bool, title: str = ""
) -> Path:
    """Write one confusion-matrix PNG (rows = reference); counts as integers, normalized as percentages."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.2, 1.0 * n + 1.6), dpi=120)
    try:
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalized else max(m.max(), 1))
        ax.set_xticks(range(n), labels, rotation=35, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(title or ("row-normalized" if normalized else "counts"))
        threshold = (1 if normalized else max(m.max(), 1)) / 2
        for i in range(n):
            for j in range(n):
                text = f"{100 * m[i, j]:.0f}" if normalized else f"{int(m[i, j])}"
                ax.text(
                    j, i, text, ha="center", va="center", color="white" if m[i, j] > threshold else "black", fontsize=9
                )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _json_clean(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is strict (readable by any parser)."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    return obj


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "group"


def write_report(report: Mapping, out_dir: str | Path, *, figures: bool = True) -> dict[str, str]:
    """Write ``metrics.json``, ``report.md``, ``predictions.csv`` and ``confusion/<group>_{counts,normalized}.png``
    (one pair per language and overall) atomically; returns {what: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    confusion_files: dict[str, dict[str, str]] = {}
    if figures:
        m = report["metrics"]
        for name, entry in [("overall", m["overall"])] + list(m["groups"].items()):
            files = {}
            for kind, key in (("counts", "confusion"), ("normalized", "confusion_normalized")):
                rel = f"{CONFUSION_DIR}/{_safe_name(name)}_{kind}.png"
                plot_confusion(
                    entry[key],
                    report["labels"],
                    out / rel,
                    normalized=kind == "normalized",
                    title=f"{name} ({'row-normalized %' if kind == 'normalized' else 'counts'}, n={entry['n']})",
                )
                files[kind] = rel
                written[f"confusion_{name}_{kind}"] = str(out / rel)
            confusion_files[name] = files
    body = {k: v for k, v in report.items() if k != "predictions"}
    body["files"] = {"predictions": PREDICTIONS_CSV, "markdown": REPORT_MD, "confusion": confusion_files}
    atomic_write_bytes(out / REPORT_JSON, (json.dumps(_json_clean(body), indent=1, ensure_ascii=False) + "\n").encode())
    written["json"] = str(out / REPORT_JSON)
    atomic_write_bytes(out / REPORT_MD, to_markdown(report, confusion_files).encode())
    written["markdown"] = str(out / REPORT_MD)
    pred = report.get("predictions")
    if pred:
        buf = io.StringIO()
        w = csv.writer(buf)
        labels = report["labels"]
        has_probs = pred.get("probs") is not None
        w.writerow(
            ["key", "language", "speaker", "label", "prediction", "correct"]
            + ([f"p_{label}" for label in labels] if has_probs else [])
        )
        for i in range(len(pred["y_true"])):
            t, p = pred["y_true"][i], pred["y_pred"][i]
            row = [pred["keys"][i], pred["languages"][i], pred["speakers"][i] or "", labels[t], labels[p], int(t == p)]
            if has_probs:
                row += [f"{x:.5f}" for x in pred["probs"][i]]
            w.writerow(row)
        atomic_write_bytes(out / PREDICTIONS_CSV, buf.getvalue().encode())
        written["predictions"] = str(out / PREDICTIONS_CSV)
    return written
