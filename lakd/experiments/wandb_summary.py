"""An experiment on W&B: one group per experiment (group = the experiment's name).

Every training and evaluation job already logs its own run into that group (the plan sets each unit's
`wandb.group`; each run's test metrics, confusion images and per-class table come from
lakd.eval.tracking.log_report_run). This adds one summary run (job_type "experiment"): the table of
variants (mean ± sd over seeds per language and overall), the paired comparisons against the baseline, the
report's figures as images, and the headline numbers in the run summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def summary_rows(report: dict) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the variants table: mean and sd of UA per language and overall, WA overall."""
    langs = report["languages"]
    label = {v["name"]: v["label"] for v in report["variants"]}
    columns = ["variant", "seeds"]
    for g in [*langs, "overall"]:
        columns += [f"ua_{g}_mean", f"ua_{g}_sd"]
    columns += ["wa_overall_mean", "wa_overall_sd"]
    rows = []
    for v in [v for v in label if v in report["summary"]]:  # the grid's order
        s = report["summary"][v]
        row: list[Any] = [label.get(v, v), len(report["runs"][v])]
        for g in [*langs, "overall"]:
            row += [s[g]["ua"]["mean"], s[g]["ua"]["sd"]]
        row += [s["overall"]["wa"]["mean"], s["overall"]["wa"]["sd"]]
        rows.append(row)
    return columns, rows


def comparison_rows(report: dict) -> tuple[list[str], list[list[Any]]]:
    columns = ["variant", "group", "diff", "ci_low", "ci_high", "p_value", "p_holm", "significant", "seeds", "n"]
    label = {v["name"]: v["label"] for v in report["variants"]}
    rows = [
        [
            label.get(v, v),
            g,
            r["diff"],
            r["low"],
            r["high"],
            r["p_value"],
            r["p_holm"],
            r["significant"],
            r["seeds"],
            r["n"],
        ]  # fmt: skip
        for v, groups in report["comparisons"].items()
        for g, r in groups.items()
    ]
    return columns, rows


def log_experiment_summary(report: dict, experiment_dir: Path, wandb_cfg: Any, figures: Mapping[str, Path]) -> None:
    """The summary run of the experiment's W&B group; nothing when W&B is disabled."""
    from lakd.train.logging import RunLogger, wandb_settings

    if wandb_settings(wandb_cfg, experiment_dir)["mode"] == "disabled":
        return
    name = report["experiment"]
    with RunLogger(
        experiment_dir / "wandb-summary",
        {"grid": report["grid"], "config": report["config"], "seeds": report["seeds"], "baseline": report["baseline"]},
        wandb_cfg,
        name=f"{name}-summary",
        group=name,
        console=False,
        job_type="experiment",
        tags=["experiment", report["grid"]],
        wandb_dir=experiment_dir,
    ) as logger:
        logger.log_table("experiment/variants", *summary_rows(report), step=0)
        logger.log_table("experiment/paired", *comparison_rows(report), step=0)
        logger.log_images({f"experiment/{k}": p for k, p in figures.items()}, step=0)
        headline = {}
        for v, s in report["summary"].items():
            headline[f"test/ua/{v}"] = s["overall"]["ua"]["mean"]
            headline[f"test/wa/{v}"] = s["overall"]["wa"]["mean"]
        for v, groups in report["comparisons"].items():
            if "overall" in groups:
                headline[f"paired/{v}/diff"] = groups["overall"]["diff"]
                headline[f"paired/{v}/p_holm"] = groups["overall"]["p_holm"]
        logger.summary({k: v for k, v in headline.items() if v is not None})
