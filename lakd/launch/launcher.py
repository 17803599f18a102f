"""`launch(cfg)`: run (or resume) the job graph of a config. How stages wait on each other:

* ``slurm``: every stage is submitted at once, chained by ``afterok`` dependencies (lakd.launch.slurm_submit);
  with ``wait=False`` this returns right after submission.
* ``local`` (one subprocess per job) and ``debug`` (in this process, no subprocess): each unit starts when
  the units it needs are done, one job at a time unless ``max_parallel`` allows more (lakd.launch.local_runner).

Units that have a done.json are skipped, so a relaunch continues where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from lakd.choices import EXECUTORS
from lakd.config import Config, ConfigError, config_hash, save_config, validate
from lakd.io import atomic_write_json
from lakd.launch.graph import Recipe, Stage, build_graph, data_present
from lakd.launch.local_runner import run_local
from lakd.launch.slurm_submit import submit_graph, wait_for_jobs
from lakd.launch.unit_graph import unit_config
from lakd.launch.unit_settings import settle_changed_units
from lakd.launch.units import now, unit_dir, upstream_outputs

log = logging.getLogger("lakd.launch")


def _graph_record(cfg: Config, stages: list[Stage], kind: str) -> dict:
    return {
        "executor": kind,
        "launched_at": now(),
        "config_hash": config_hash(cfg),
        "name": cfg.name,
        "stages": [
            {
                "name": s.name,
                "items": list(s.items),
                "after": list(s.after),
                "resources": dataclasses.asdict(s.resources),
            }
            for s in stages
        ],
    }


def launch(
    cfg: Config,
    run_dir: str | os.PathLike | None = None,
    executor: str | None = None,
    wait: bool = True,
    recipes: dict[str, Recipe] | None = None,
    poll_s: float | None = None,
    max_parallel: int = 1,
) -> dict:
    """Run (or resume) the job graph of `cfg` in `run_dir`; units with done.json are skipped.

    `executor`: slurm | local | debug (default cfg.launch.executor). With slurm and `wait=False` this returns
    right after submission (the jobs are chained by afterok dependencies). `max_parallel`: local jobs at once.
    Returns a JSON-able summary:
    {"run_dir", "executor", "jobs": {stage: [job ids]}, "skipped": [stages], "outputs": {stage: output}}.
    """
    kind = _check_executor(executor or cfg.launch.executor, wait)
    run_dir = Path(run_dir or cfg.run_dir).resolve()
    cfg = cfg.copy(run_dir=str(run_dir))  # jobs may start in another working directory
    stages = build_graph(cfg, run_dir, recipes)
    if stages[0].name == "shards" and stages[0].is_done(run_dir) and not data_present(cfg):
        log.warning("shards stage was done but the data is gone: making it again")
        (unit_dir(run_dir, "shards") / "done.json").unlink()
    return run_stages(cfg, run_dir, stages, kind, wait=wait, poll_s=poll_s, max_parallel=max_parallel)


def _check_executor(kind: str, wait: bool) -> str:
    if kind not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if not wait and kind != "slurm":
        raise ValueError(
            f"wait=False needs the slurm executor: with {kind!r} the stages run one after another from this process"
        )
    return kind


def run_stages(
    cfg: Config,
    run_dir: str | os.PathLike,
    stages: list[Stage],
    executor: str,
    wait: bool = True,
    poll_s: float | None = None,
    max_parallel: int = 1,
) -> dict:
    """Run (or resume) any graph of stages in `run_dir` (the pipeline's, or an experiment grid's UnitStages).

    `cfg` names the jobs and is saved as run_dir/config.yaml; a UnitStage's units run with their own configs.
    Returns the summary `launch` describes.
    """
    kind = _check_executor(executor, wait)
    run_dir = Path(run_dir).resolve()
    for stage in stages:  # before anything is written or submitted: every unit's config is valid ...
        for item in stage.units:
            validate(unit_config(stage, item, cfg))
    settle_changed_units(cfg, run_dir, stages)  # ... and, where a unit ran before, still the same run
    (run_dir / "stages").mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / "stages" / "graph.json", _graph_record(cfg, stages, kind))
    items = {s.name: s.items for s in stages}
    summary: dict[str, Any] = {"run_dir": str(run_dir), "executor": kind, "jobs": {}, "skipped": [], "outputs": {}}
    if kind == "slurm":
        jobs = submit_graph(cfg, run_dir, stages, items, summary)
        if wait:
            wait_for_jobs(run_dir, stages, jobs, poll_s if poll_s is not None else 10.0)
    else:
        run_local(kind, cfg, run_dir, stages, items, summary, max_parallel=max_parallel)
    if wait:
        summary["outputs"] = upstream_outputs(run_dir, [s.name for s in stages], items)
    return summary
