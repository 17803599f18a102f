"""Running the graph on SLURM: every stage submitted at once, chained with ``--dependency=afterok:<job ids>``.

The scheduler starts a stage when its inputs succeeded, so the graph runs on even if the submitting process
(your shell, or the small driver job of slurm/distill.sh) exits. `wait_for_jobs` additionally watches the jobs,
cancels what is left when a stage fails, and raises with the failed stage's log path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from lakd.config import Config
from lakd.launch.executors import make_executor
from lakd.launch.graph import Stage, downstream
from lakd.launch.slurm_states import SLURM_RUNNING, SLURM_WAITING, base_job_id, slurm_job_states
from lakd.launch.task import unit_task
from lakd.launch.units import LaunchError, mark_submitted, now, read_done, read_json, record_job, unit_dir, update_state

log = logging.getLogger("lakd.launch")


def _refuse_live_duplicates(run_dir: Path, stages: list[Stage]) -> None:
    """A relaunch must not submit a second copy of a unit whose job SLURM still holds."""
    open_units = {}
    for stage in stages:
        for u in stage.pending_units(run_dir):
            st = read_json(unit_dir(run_dir, stage.name, u) / "state.json") or {}
            if st.get("executor") == "slurm" and st.get("job_id") and st.get("state") in ("pending", "running"):
                open_units[stage.name + (f"[{u}]" if u else "")] = st["job_id"]
    if not open_units:
        return
    live = slurm_job_states(open_units.values()) or {}
    busy = {
        k: j for k, j in open_units.items() if live.get(j, live.get(base_job_id(j))) in SLURM_WAITING + SLURM_RUNNING
    }
    if busy:
        listing = ", ".join(f"{k} (job {j})" for k, j in busy.items())
        raise LaunchError(
            f"{run_dir} is still queued or running on SLURM: {listing}. Wait for it "
            f"(lakd status {run_dir}) or cancel it "
            f"(scancel {' '.join(sorted({base_job_id(j) for j in busy.values()}))}) "
            "before launching again."
        )


def submit_graph(cfg: Config, run_dir: Path, stages: list[Stage], items: dict, summary: dict) -> dict:
    import submitit

    submitted: dict[str, list[tuple[str | None, Any]]] = {}  # stage -> [(unit, job)]
    _refuse_live_duplicates(run_dir, stages)
    for stage in stages:
        todo = stage.pending_units(run_dir)
        if not todo:
            summary["skipped"].append(stage.name)
            log.info("stage %s: done, skipped", stage.name)
            continue
        deps = sorted({base_job_id(j.job_id) for s in stage.after for _, j in submitted.get(s, [])})
        ex = make_executor(
            "slurm",
            run_dir / "stages" / stage.name / "logs" / "%j",
            stage.resources,
            f"{cfg.name}-{stage.name}",
            dependency=("afterok:" + ":".join(deps)) if deps else None,
        )
        tasks = [unit_task(stage, u, cfg, run_dir, items) for u in todo]
        for u in todo:
            mark_submitted(unit_dir(run_dir, stage.name, u), "slurm")
        with submitit.helpers.clean_env():  # a driver inside a SLURM job must not leak its SLURM_* settings
            if stage.items:
                with ex.batch():
                    jobs = [ex.submit(t) for t in tasks]
            else:
                jobs = [ex.submit(tasks[0])]
        for u, job in zip(todo, jobs):
            record_job(unit_dir(run_dir, stage.name, u), job)
        submitted[stage.name] = list(zip(todo, jobs))
        summary["jobs"][stage.name] = [str(j.job_id) for j in jobs]
        log.info(
            "stage %s: submitted %s%s",
            stage.name,
            ", ".join(summary["jobs"][stage.name]),
            f" (after {', '.join(deps)})" if deps else "",
        )
    return submitted


def _failure_text(udir: Path, job: Any) -> str:
    state = read_json(udir / "state.json") or {}
    err = state.get("error")
    if not err:  # killed by SLURM (time limit, memory, scancel): the job could not say why
        with contextlib.suppress(Exception):
            err = f"ended without a result, SLURM state {job.state}"
    logs = state.get("stderr") or getattr(getattr(job, "paths", None), "stderr", "")
    return f"{err or 'ended without a result'} (log: {logs})"


def wait_for_jobs(
    run_dir: Path, stages: list[Stage], jobs: dict[str, list[tuple[str | None, Any]]], poll_s: float
) -> None:
    """Watch the jobs until all ended. A failed unit cancels the stages that need it (independent units,
    e.g. the other teachers, run on: a relaunch will skip them); then LaunchError names the failures."""
    from submitit.slurm.slurm import SlurmJob

    pending = [(stage, u, job) for stage in jobs for u, job in jobs[stage]]
    failures: list[str] = []
    failed_stages: set[str] = set()
    while pending:
        SlurmJob.watcher.update()  # one sacct call for all jobs
        still = []
        for stage, u, job in pending:
            udir = unit_dir(run_dir, stage, u)
            if not job.done():
                still.append((stage, u, job))
            elif read_done(udir) is None and stage in downstream(stages, failed_stages):
                update_state(
                    udir,
                    state="failed",
                    ended_at=now(),  # SLURM cancelled it (kill_invalid_depend)
                    error=f"cancelled: it needs {', '.join(sorted(failed_stages))}, which failed",
                )
            elif read_done(udir) is None:
                label = stage + (f"[{u}]" if u else "")
                reason = _failure_text(udir, job)
                if (read_json(udir / "state.json") or {}).get("state") != "failed":
                    update_state(udir, state="failed", ended_at=now(), error=reason)
                failures.append(f"stage {label} failed (job {job.job_id}): {reason}")
                failed_stages.add(stage)
        doomed = downstream(stages, failed_stages)
        pending = []
        for stage, u, job in still:
            if stage in doomed:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
                update_state(
                    unit_dir(run_dir, stage, u),
                    state="failed",
                    ended_at=now(),
                    error=f"cancelled: it needs {', '.join(sorted(failed_stages))}, which failed",
                )
            else:
                pending.append((stage, u, job))
        if pending:
            time.sleep(poll_s)
    if failures:
        raise LaunchError("; ".join(failures))
