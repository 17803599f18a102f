"""`run_experiment`: plan a grid × seeds on a config, run it through the job graph, and read its report.

    from lakd.experiments import run_experiment
    result = run_experiment(load_config("emosynth3"), "paper", seeds=[0, 1, 2], executor="slurm")

The graph's last unit writes the report, so with SLURM and `wait=False` the cluster finishes the whole
experiment after this returns; `lakd status <run dir>` follows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lakd.config import Config
from lakd.experiments.grids import Grid, load_grid
from lakd.experiments.layout import EXPERIMENT_JSON, adopt_legacy_plan
from lakd.experiments.markers import forget_changed_units
from lakd.experiments.plan import Plan, Statistics, plan_experiment
from lakd.io import atomic_write_json
from lakd.launch.launcher import run_stages
from lakd.launch.units import read_done, unit_dir

log = logging.getLogger("lakd.experiments")


def default_run_dir(cfg: Config, grid: Grid) -> Path:
    """<config's run_dir>-<grid>, e.g. runs/emosynth3-paper."""
    return Path(f"{str(cfg.run_dir).rstrip('/')}-{grid.name}")


def prepare_experiment(
    cfg: Config,
    grid: str | Path | Grid,
    seeds: list[int],
    run_dir: str | os.PathLike | None = None,
    *,
    variants: list[str] | None = None,
    baseline: str | None = None,
    name: str | None = None,
    recipes: dict | None = None,
    statistics: Statistics | None = None,
) -> tuple[Plan, list[str]]:
    """Plan the experiment, set aside the markers of changed units and write grids/<grid>/experiment.json;
    nothing runs.
    Returns the plan and the units that changed since the last launch."""
    g = load_grid(grid).select(variants, baseline)
    legacy = adopt_legacy_plan(run_dir or default_run_dir(cfg, g))
    if legacy:
        log.info("moved the plan and report of grid %s (an older lakd's layout) into grids/%s/", legacy, legacy)
    plan = plan_experiment(
        cfg, g, seeds, run_dir or default_run_dir(cfg, g), name=name, recipes=recipes, statistics=statistics
    )
    changed = forget_changed_units(plan)
    plan.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.dir / EXPERIMENT_JSON, plan.record())
    return plan, changed


def run_experiment(
    cfg: Config,
    grid: str | Path | Grid,
    seeds: list[int],
    run_dir: str | os.PathLike | None = None,
    *,
    executor: str | None = None,
    max_parallel: int = 1,
    wait: bool = True,
    variants: list[str] | None = None,
    baseline: str | None = None,
    name: str | None = None,
    recipes: dict | None = None,
    statistics: Statistics | None = None,
    poll_s: float | None = None,
) -> dict[str, Any]:
    """Run (or resume) an experiment; finished units are skipped, changed ones rerun (lakd.experiments.plan).

    Returns {"run_dir", "name", "grid", "executor", "jobs", "changed", "teacher_trainings", "report"} where
    "report" is the report unit's output (paths of grids/<grid>/report.md, report.json, figures) once it ran.
    A failed unit raises LaunchError after everything that does not need it has run.
    """
    plan, changed = prepare_experiment(
        cfg,
        grid,
        seeds,
        run_dir,
        variants=variants,
        baseline=baseline,
        name=name,
        recipes=recipes,
        statistics=statistics,
    )
    return run_plan(plan, changed, executor=executor, max_parallel=max_parallel, wait=wait, poll_s=poll_s)


def run_plan(
    plan: Plan,
    changed: list[str] | None = None,
    *,
    executor: str | None = None,
    max_parallel: int = 1,
    wait: bool = True,
    poll_s: float | None = None,
) -> dict[str, Any]:
    """Run a prepared plan's graph (`prepare_experiment`); returns what `run_experiment` describes."""
    kind = executor or plan.cfg.launch.executor
    log.info(
        "experiment %s: grid %s (%d variants) × seeds %s -> %s",
        plan.name,
        plan.grid.name,
        len(plan.grid.variants),
        plan.seeds,
        plan.run_dir,
    )
    summary = run_stages(plan.cfg, plan.run_dir, plan.stages, kind, wait=wait, poll_s=poll_s, max_parallel=max_parallel)
    return {
        "run_dir": str(plan.run_dir),
        "name": plan.name,
        "grid": plan.grid.name,
        "executor": kind,
        "jobs": summary["jobs"],
        "changed": list(changed or []),
        "teacher_trainings": plan.teacher_trainings,
        "report": (read_done(unit_dir(plan.run_dir, "report", plan.grid.name)) or {}).get("output"),
    }
