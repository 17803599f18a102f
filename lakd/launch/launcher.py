"""`launch(cfg)`: run (or resume) the job graph of a config. How stages wait on each other:

* ``slurm``: every stage is submitted at once, chained by ``afterok`` dependencies (lakd.launch.slurm_submit);
  with ``wait=False`` this returns right after submission.
* ``local`` (one subprocess per job) and ``debug`` (in this process, no subprocess): stage by stage, one job
  at a time (array items one after another: on one machine they would share the GPUs).

Units that have a done.json are skipped, so a relaunch continues where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from lakd.choices import EXECUTORS
from lakd.config import Config, ConfigError, config_hash, save_config
from lakd.io import atomic_write_json
from lakd.launch.executors import make_executor
from lakd.launch.graph import Recipe, Stage, build_graph, data_present, downstream
from lakd.launch.slurm_submit import submit_graph, wait_for_jobs
from lakd.launch.task import unit_task
from lakd.launch.units import (
    LaunchError,
    mark_submitted,
    now,
    read_done,
    read_json,
    record_job,
    unit_dir,
    update_state,
    upstream_outputs,
    work_hash,
)

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


def _warn_changed_config(stage: Stage, run_dir: Path, h: str) -> None:
    for u in stage.units:
        done = read_done(unit_dir(run_dir, stage.name, u)) or {}
        if done.get("config_hash") not in (None, h):
            log.warning(
                "%s was done with another config (hash %s, now %s): kept. Delete %s and the recipe's "
                "output to redo it.",
                stage.name + (f"[{u}]" if u else ""),
                done["config_hash"],
                h,
                unit_dir(run_dir, stage.name, u),
            )


def launch(
    cfg: Config,
    run_dir: str | os.PathLike | None = None,
    executor: str | None = None,
    wait: bool = True,
    recipes: dict[str, Recipe] | None = None,
    poll_s: float | None = None,
) -> dict:
    """Run (or resume) the job graph of `cfg` in `run_dir`; units with done.json are skipped.

    `executor`: slurm | local | debug (default cfg.launch.executor). With slurm and `wait=False` this returns
    right after submission (the jobs are chained by afterok dependencies). Returns a JSON-able summary:
    {"run_dir", "executor", "jobs": {stage: [job ids]}, "skipped": [stages], "outputs": {stage: output}}.
    """
    kind = executor or cfg.launch.executor
    if kind not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if not wait and kind != "slurm":
        raise ValueError(
            f"wait=False needs the slurm executor: with {kind!r} the stages run one after another from this process"
        )
    run_dir = Path(run_dir or cfg.run_dir).resolve()
    cfg = cfg.copy(run_dir=str(run_dir))  # jobs may start in another working directory
    stages = build_graph(cfg, run_dir, recipes)
    if stages[0].name == "shards" and stages[0].is_done(run_dir) and not data_present(cfg):
        log.warning("shards stage was done but the data is gone: making it again")
        (unit_dir(run_dir, "shards") / "done.json").unlink()
    h = work_hash(cfg)
    (run_dir / "stages").mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / "stages" / "graph.json", _graph_record(cfg, stages, kind))
    items = {s.name: s.items for s in stages}
    summary: dict[str, Any] = {"run_dir": str(run_dir), "executor": kind, "jobs": {}, "skipped": [], "outputs": {}}
    for s in stages:
        _warn_changed_config(s, run_dir, h)
    if kind == "slurm":
        jobs = submit_graph(cfg, run_dir, stages, items, summary)
        if wait:
            wait_for_jobs(run_dir, stages, jobs, poll_s if poll_s is not None else 10.0)
    else:
        _run_sequential(kind, cfg, run_dir, stages, items, summary)
    if wait:
        summary["outputs"] = upstream_outputs(run_dir, [s.name for s in stages], items)
    return summary


def _run_sequential(kind: str, cfg: Config, run_dir: Path, stages: list[Stage], items: dict, summary: dict) -> None:
    """Stage by stage, one job at a time; a failed unit stops the stages that need it (LaunchError)."""
    failures: list[str] = []
    failed_stages: set[str] = set()
    for stage in stages:
        todo = stage.pending_units(run_dir)
        if not todo:
            summary["skipped"].append(stage.name)
            log.info("stage %s: done, skipped", stage.name)
            continue
        if stage.name in downstream(stages, failed_stages):
            log.info("stage %s: not run (it needs %s)", stage.name, ", ".join(sorted(failed_stages)))
            continue
        ex = make_executor(
            kind, run_dir / "stages" / stage.name / "logs" / "%j", stage.resources, f"{cfg.name}-{stage.name}"
        )
        summary["jobs"][stage.name] = []
        for u in todo:
            udir = unit_dir(run_dir, stage.name, u)
            label = stage.name + (f"[{u}]" if u else "")
            mark_submitted(udir, kind)
            job = ex.submit(unit_task(stage, u, cfg, run_dir, items))
            record_job(udir, job)
            summary["jobs"][stage.name].append(str(job.job_id))
            log.info("stage %s: running as job %s", label, job.job_id)
            try:
                if kind == "debug":  # DebugJob.result() would open pdb on an error
                    exc = job.exception()
                    if exc is not None:
                        raise exc
                else:
                    job.result()
            except Exception as e:
                state = read_json(udir / "state.json") or {}
                if state.get("state") != "failed":
                    update_state(udir, state="failed", ended_at=now(), error=f"{type(e).__name__}: {e}")
                    state = read_json(udir / "state.json") or {}
                logs = state.get("stderr") or ""
                failures.append(
                    f"{label} failed (job {job.job_id}): {state.get('error') or type(e).__name__}"
                    + (f" (log: {logs})" if logs else "")
                )
                failed_stages.add(stage.name)
    if failures:
        raise LaunchError("stage " + "; stage ".join(failures))
