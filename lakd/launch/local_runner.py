"""Running the graph on this machine: ``local`` (one subprocess per unit) and ``debug`` (in this process).

Units start when the units they need are done, in graph order, with at most `max_parallel` local jobs at a
time (1 by default: on one machine parallel jobs share the CPUs and GPUs, so more is a choice, e.g. many
small CPU runs of an experiment grid). ``debug`` always runs one unit at a time, in this process, so that
breakpoints work. A failed unit stops only the units that need it; the others run on, and a relaunch skips
everything that finished.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lakd.config import Config
from lakd.launch.executors import make_executor
from lakd.launch.graph import Stage
from lakd.launch.task import unit_task
from lakd.launch.unit_graph import unit_needs
from lakd.launch.units import LaunchError, mark_submitted, now, read_json, record_job, unit_dir, update_state

log = logging.getLogger("lakd.launch")

Unit = tuple[str, str | None]


def _label(unit: Unit) -> str:
    return unit[0] + (f"[{unit[1]}]" if unit[1] else "")


def _job_error(kind: str, job: Any) -> BaseException | None:
    """The job's exception, or None when it succeeded (DebugJob.result() would open pdb on an error)."""
    if kind == "debug":
        return job.exception()
    try:
        job.result()
    except Exception as e:
        return e
    return None


def run_local(
    kind: str,
    cfg: Config,
    run_dir: Path,
    stages: list[Stage],
    items: dict,
    summary: dict,
    max_parallel: int = 1,
    poll_s: float = 0.2,
) -> None:
    """Run every pending unit; raise LaunchError naming each failed unit (with its log) at the end."""
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
    width = 1 if kind == "debug" else max_parallel
    by_name = {s.name: s for s in stages}
    queue: list[Unit] = []
    for stage in stages:
        todo = stage.pending_units(run_dir)
        if not todo:
            summary["skipped"].append(stage.name)
            log.info("stage %s: done, skipped", stage.name)
        queue += [(stage.name, u) for u in todo]
    pending = set(queue)
    needs = {unit: unit_needs(by_name[unit[0]], unit[1], stages) for unit in queue}
    executors: dict[str, Any] = {}
    running: dict[Unit, Any] = {}
    failed: set[Unit] = set()  # failed, or not run because something it needs failed
    failures: list[str] = []

    def submit(unit: Unit) -> None:
        stage = by_name[unit[0]]
        if stage.name not in executors:
            executors[stage.name] = make_executor(
                kind, run_dir / "stages" / stage.name / "logs" / "%j", stage.resources, f"{cfg.name}-{stage.name}"
            )
        udir = unit_dir(run_dir, *unit)
        mark_submitted(udir, kind)
        job = executors[stage.name].submit(unit_task(stage, unit[1], cfg, run_dir, items))
        record_job(udir, job)
        summary["jobs"].setdefault(stage.name, []).append(str(job.job_id))
        log.info("stage %s: running as job %s", _label(unit), job.job_id)
        running[unit] = job

    def finish(unit: Unit, job: Any) -> None:
        del running[unit]
        error = _job_error(kind, job)
        if error is None:
            return
        udir = unit_dir(run_dir, *unit)
        state = read_json(udir / "state.json") or {}
        if state.get("state") != "failed":
            update_state(udir, state="failed", ended_at=now(), error=f"{type(error).__name__}: {error}")
            state = read_json(udir / "state.json") or {}
        logs = state.get("stderr") or ""
        failures.append(
            f"{_label(unit)} failed (job {job.job_id}): {state.get('error') or type(error).__name__}"
            + (f" (log: {logs})" if logs else "")
        )
        failed.add(unit)

    while queue or running:
        for unit in list(queue):
            if len(running) >= width:
                break
            blocked = [n for n in needs[unit] if n in failed]
            if blocked:
                queue.remove(unit)
                failed.add(unit)
                log.info("stage %s: not run (it needs %s)", _label(unit), ", ".join(map(_label, blocked)))
                continue
            if any(n in pending for n in needs[unit]):
                continue  # an input is still queued or running
            queue.remove(unit)
            submit(unit)
            if kind == "debug":  # runs here, now
                finish(unit, running[unit])
                pending.discard(unit)
        for unit, job in list(running.items()):
            if job.done():
                finish(unit, job)
                pending.discard(unit)
        if running:
            time.sleep(poll_s)
        elif queue and all(any(n in pending for n in needs[u]) for u in queue):
            stuck = ", ".join(_label(u) for u in queue)
            raise LaunchError(f"units wait on each other (a cycle in the graph): {stuck}")
    if failures:
        raise LaunchError("stage " + "; stage ".join(failures))
