"""One report per grid of an experiment directory: report.json (every number), report.md (the tables),
figures/*.png, in `<run_dir>/grids/<grid>/`, and on W&B a summary run in the experiment's group.

    build_experiment_report("runs/emosynth3-paper", "paper")   # what the graph's `report[paper]` unit runs
    build_experiment_report("runs/x", "paper", baseline="ft-mono")  # re-paired: grids/paper/vs-ft-mono/

It reads the grid's experiment.json (the plan) and each run's evaluation (metrics.json, predictions.csv of the
evaluate units that finished); runs that have not finished are listed under `missing`, never silently dropped,
so a report of a partly failed grid says which rows it lacks. Statistics: lakd.experiments.stats.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lakd.experiments import figures, markdown, stats, training
from lakd.experiments.layout import EXPERIMENT_JSON, grid_dir, grids_in
from lakd.io import atomic_write_bytes, atomic_write_json
from lakd.launch.units import now, read_done, read_json, unit_dir

log = logging.getLogger("lakd.experiments")

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FIGURES = "figures"


def resolve_grid(run_dir: str | Path, grid: str | None) -> str:
    """The grid named, or the only grid run in the directory; one line naming the choices otherwise."""
    found = grids_in(run_dir)
    if grid is None and len(found) == 1:
        return found[0]
    if grid is not None and grid in found:
        return grid
    if not found:
        raise FileNotFoundError(f"{run_dir}: no grids/<grid>/{EXPERIMENT_JSON} (not an experiment directory)")
    ask = f"no grid {grid!r} was run there" if grid else "several grids were run there"
    raise FileNotFoundError(f"{run_dir}: {ask}; name one with --grid: {', '.join(found)}")


def collect_runs(run_dir: Path, plan: dict, rel_to: Path | None = None) -> tuple[dict, dict, list[str]]:
    """({variant: {seed: run_metrics + report_dir}}, {variant: {seed: predictions by key}}, missing runs)."""
    metrics: dict[str, dict[str, dict]] = {}
    predictions: dict[str, dict[str, dict]] = {}
    missing = []
    for variant, by_seed in plan["runs"].items():
        for seed, item in by_seed.items():
            done = read_done(unit_dir(run_dir, "evaluate", item))
            out_dir = ((done or {}).get("output") or {}).get("out_dir")
            if not out_dir or not (Path(out_dir) / "metrics.json").exists():
                missing.append(f"{variant} seed {seed}")
                continue
            report = json.loads((Path(out_dir) / "metrics.json").read_text())
            rel = os.path.relpath(out_dir, rel_to or run_dir)
            metrics.setdefault(variant, {})[seed] = {**stats.run_metrics(report), "report_dir": rel}
            preds = stats.read_predictions(Path(out_dir) / "predictions.csv", plan["labels"])
            predictions.setdefault(variant, {})[seed] = preds
    return metrics, predictions, missing


def build_experiment_report(
    run_dir: str | Path, grid: str | None = None, *, baseline: str | None = None, wandb_cfg: Any = None
) -> dict:
    """Write report.json, report.md and the figures of a grid (the only one when `grid` is None) into
    grids/<grid>/, or, with another `baseline` than the grid's, into grids/<grid>/vs-<baseline>/ (the same runs
    paired against it; the grid's own report stays). Logs the W&B summary when W&B is on.
    Returns {"markdown", "json", "figures", "missing", "overall_ua": {variant: mean}}."""
    run_dir = Path(run_dir).resolve()
    grid = resolve_grid(run_dir, grid)
    plan = read_json(grid_dir(run_dir, grid) / EXPERIMENT_JSON)
    out = grid_dir(run_dir, grid)  # where this report goes
    if baseline and baseline != plan["baseline"]:
        if baseline not in {v["name"] for v in plan["variants"]}:
            names = ", ".join(v["name"] for v in plan["variants"])
            raise ValueError(f"baseline {baseline!r} is not a variant of grid {grid}: {names}")
        plan["baseline"], out = baseline, out / f"vs-{baseline}"
    out.mkdir(parents=True, exist_ok=True)
    langs, labels = plan["languages"], plan["labels"]
    opts = plan["statistics"]
    metrics, predictions, missing = collect_runs(run_dir, plan, rel_to=out)
    trained = {
        v: training.summarize({s: training.run_training(run_dir, plan["run_units"][v][s]) for s in metrics[v]})
        for v in metrics
    }
    order = [v["name"] for v in plan["variants"] if v["name"] in metrics]
    summary = {v: stats.across_seeds(metrics[v], langs, labels) for v in order}
    comparisons = stats.compare_all(
        {v: predictions[v] for v in order},
        plan["baseline"],
        langs,
        metric=opts["metric"],
        n_bootstrap=opts["n_bootstrap"],
        n_permutations=opts["n_permutations"],
        alpha=opts["alpha"],
    )
    display = {v["name"]: v["label"] for v in plan["variants"] if v["name"] in metrics}
    figs = {}
    if order:
        fig_dir = out / FIGURES
        seeds = max(len(metrics[v]) for v in order)
        figs["ua_per_language"] = figures.plot_ua_per_language(
            summary, display, langs, fig_dir / "ua_per_language.png", seeds
        )
        figs["per_class_recall"] = figures.plot_per_class_recall(
            summary, display, labels, fig_dir / "per_class_recall.png"
        )
        figs["confusion"] = figures.plot_confusions(
            {display[v]: summary[v]["confusion"] for v in order}, labels, fig_dir / "confusion.png"
        )
    report = {
        "experiment": plan["name"],
        "grid": plan["grid"],
        "grid_description": plan.get("grid_description", ""),
        "config": plan["config"],
        "baseline": plan["baseline"],
        "seeds": plan["seeds"],
        "languages": langs,
        "labels": labels,
        "variants": plan["variants"],
        "runs": metrics,
        "summary": summary,
        "comparisons": comparisons,
        "statistics": opts,
        "teacher_trainings": plan.get("teacher_trainings", {}),
        "training": {v: t for v, t in trained.items() if t},
        "missing": missing,
        "figures": {k: str(Path(p).relative_to(out)) for k, p in figs.items()},
        "created_at": now(),
    }
    atomic_write_json(out / REPORT_JSON, _jsonable(report))
    atomic_write_bytes(out / REPORT_MD, markdown.render(report).encode())
    if wandb_cfg is not None:
        from lakd.experiments.wandb_summary import log_experiment_summary

        log_experiment_summary(report, out, wandb_cfg, figs)
    return {
        "markdown": str(out / REPORT_MD),
        "json": str(out / REPORT_JSON),
        "figures": {k: str(p) for k, p in figs.items()},
        "missing": missing,
        "overall_ua": {v: summary[v]["overall"]["ua"]["mean"] for v in order},
    }


def _jsonable(obj: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, so report.json is strict JSON."""
    import math

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def read_report(run_dir: str | Path, grid: str | None = None) -> dict:
    """report.json of a grid of an experiment directory (the only grid when `grid` is None)."""
    path = grid_dir(run_dir, resolve_grid(run_dir, grid)) / REPORT_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist yet (the report unit has not run)")
    return json.loads(path.read_text())
