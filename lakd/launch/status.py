"""Where a launched run stands: one row per stage (and per item of an array stage).

Reads the markers the job graph writes (run_dir/stages/graph.json, <stage>[/<item>]/state.json, done.json),
the last metric of each training run (metrics.jsonl), and, for SLURM jobs that are not finished by their own
account, the scheduler's view (lakd.launch.slurm_states): a job killed by the scheduler cannot write "failed"
itself, so the live state wins over a stale marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lakd.launch.graph import STAGES
from lakd.launch.slurm_states import SLURM_FAILED, SLURM_RUNNING, SLURM_WAITING, base_job_id, slurm_job_states
from lakd.launch.units import read_done, read_json, unit_dir

_PREFERRED = ("step", "epoch", "ua", "wa", "loss")


# ------------------------------------------------------------------------------------------- metrics


def last_metrics(path: str | os.PathLike, tail_bytes: int = 65536) -> dict | None:
    """The last metrics record (not an event) of a metrics.jsonl, plus the latest `dev/...` values when that
    record has none (training logs many train lines between dev evaluations), and under `_progress` what a
    watcher needs for step/total and an ETA. A torn last line is skipped."""
    try:
        with open(path, "rb") as f:
            head = f.readline(4096)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    last: dict | None = None
    for rec in reversed(records):
        if "event" in rec:
            continue
        if last is None:
            last = dict(rec)
            if any(k.startswith("dev/") for k in last):
                break
        elif any(k.startswith("dev/") for k in rec):
            last.update({k: v for k, v in rec.items() if k.startswith("dev/") and k not in last})
            break
    if last is not None:
        progress = _progress(records, head)
        if progress:
            last["_progress"] = progress
    return last


def _progress(records: list[dict], head: bytes) -> dict | None:
    """Total steps (from the latest `start` event, or the file's first line when the tail no longer holds it:
    a resume checks that the total is unchanged) and the step rate of the timed records in the tail."""
    starts = [r for r in records if r.get("event") == "start" and "total_steps" in r]
    start = starts[-1] if starts else None
    if start is None:
        try:
            first = json.loads(head.decode("utf-8", "replace"))
            start = first if isinstance(first, dict) and first.get("event") == "start" else None
        except json.JSONDecodeError:
            start = None
    if not start or not isinstance(start.get("total_steps"), int):
        return None
    since = start.get("time") if start in records else None
    timed = [
        r
        for r in records
        if "event" not in r
        and isinstance(r.get("step"), int)
        and isinstance(r.get("time"), (int, float))
        and (since is None or r["time"] >= since)
    ]
    progress = {"total_steps": start["total_steps"]}
    if starts and isinstance(start.get("step"), int) and isinstance(since, (int, float)):
        timed = [{"step": start["step"], "time": since}] + timed
    if len(timed) >= 2 and timed[-1]["step"] > timed[0]["step"]:
        progress["seconds_per_step"] = (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])
    return progress


def _clock(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def format_metrics(rec: dict | None, limit: int = 5) -> str:
    """`step 120/304 (39%) ETA 0:02:10` when the run's total is known, then the most telling metrics."""
    if not rec:
        return ""
    nums = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "time"}
    progress, parts = rec.get("_progress") or {}, []
    total, step = progress.get("total_steps"), nums.get("step")
    if isinstance(total, int) and total > 0 and isinstance(step, int):
        parts.append(f"step {step}/{total} ({100 * step // total}%)")
        if progress.get("seconds_per_step") is not None and step < total:
            parts.append(f"ETA {_clock((total - step) * progress['seconds_per_step'])}")
        nums.pop("step")
    ranked = sorted(nums, key=lambda k: next((i for i, p in enumerate(_PREFERRED) if p in k.lower()), len(_PREFERRED)))
    for k in ranked[:limit]:
        v = nums[k]
        parts.append(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4g}")
    return " ".join(parts)


def _metrics_candidates(run_dir: Path, stage: str, item: str | None, output: Any) -> list[Path]:
    c: list[Path] = []
    if isinstance(output, str) and output:
        p = Path(output)
        c += [p / "metrics.jsonl", p.parent / "metrics.jsonl"]
    if item is not None:
        c.append(run_dir / stage / item / "metrics.jsonl")
    c += [run_dir / stage / "metrics.jsonl", unit_dir(run_dir, stage, item) / "metrics.jsonl"]
    return c


def _report_metrics(output: Any) -> dict | None:
    if isinstance(output, dict) and isinstance(output.get("metrics"), dict):
        overall = output["metrics"].get("overall") or {}
        rec = {
            f"test_{k}": v for k, v in overall.items() if isinstance(v, (int, float)) and k in ("ua", "wa", "macro_f1")
        }
        if "mean_ua" in output["metrics"]:
            rec["test_mean_ua"] = output["metrics"]["mean_ua"]
        return rec or None
    return None


# ----------------------------------------------------------------------------------------------- rows


def _stage_list(run_dir: Path) -> list[tuple[str, list[str]]]:
    graph = read_json(run_dir / "stages" / "graph.json")
    if graph:
        return [(s["name"], list(s.get("items") or [])) for s in graph["stages"]]
    found = []
    for name in STAGES:
        d = run_dir / "stages" / name
        if d.is_dir():
            items = sorted(
                p.name
                for p in d.iterdir()
                if p.is_dir() and p.name != "logs" and ((p / "state.json").exists() or (p / "done.json").exists())
            )
            found.append((name, items))
    return found


def stage_status(run_dir: str | os.PathLike, live: bool | None = None) -> list[dict]:
    """One dict per unit, in graph order: stage, item, state (pending | running | done | failed | not started),
    live (SLURM state or None), job_id, attempts, requeues, started_at, ended_at, metric, metric_text,
    stdout, stderr, error, output.

    `live`: ask SLURM about unfinished SLURM jobs (default: when the run used the slurm executor).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "stages").is_dir():
        raise FileNotFoundError(f"{run_dir}: no stages/ directory (not launched with `lakd launch`?)")
    graph = read_json(run_dir / "stages" / "graph.json") or {}
    rows = []
    for stage, items in _stage_list(run_dir):
        for item in items or [None]:
            udir = unit_dir(run_dir, stage, item)
            st = read_json(udir / "state.json") or {}
            done = read_done(udir)
            output = (done or {}).get("output")
            metric = _report_metrics(output)
            if metric is None:
                metric = next(
                    (m for m in (last_metrics(p) for p in _metrics_candidates(run_dir, stage, item, output)) if m), None
                )
            rows.append(
                {
                    "stage": stage,
                    "item": item,
                    "state": "done" if done else st.get("state", "not started"),
                    "live": None,
                    "executor": st.get("executor") or graph.get("executor"),
                    "job_id": st.get("job_id"),
                    "attempts": st.get("attempts", 0),
                    "requeues": st.get("requeues", 0),
                    "submitted_at": st.get("submitted_at"),
                    "started_at": st.get("started_at"),
                    "ended_at": st.get("ended_at"),
                    "metric": metric,
                    "metric_text": format_metrics(metric),
                    "stdout": st.get("stdout"),
                    "stderr": st.get("stderr"),
                    "error": st.get("error"),
                    "output": output,
                    "dir": str(udir),
                    "run_dir": str(run_dir),
                }
            )
    use_live = live if live is not None else any(r["executor"] == "slurm" for r in rows)
    if use_live:
        _apply_live_states(rows)
        _explain_cancelled(rows, {s["name"]: s.get("after", []) for s in graph.get("stages", [])})
    return rows


def _explain_cancelled(rows: list[dict], after: dict[str, list[str]]) -> None:
    """A job SLURM cancelled before it started because an upstream stage failed says so."""
    failed = {r["stage"] for r in rows if r["state"] == "failed" and r["live"] != "CANCELLED"}
    for r in rows:
        needs = sorted(set(after.get(r["stage"], [])) & failed)
        if r["live"] == "CANCELLED" and not r["attempts"] and needs:
            r["error"] = f"never started: it needs {', '.join(needs)}, which failed"
        elif r["live"] == "CANCELLED" and not r["attempts"]:
            r["error"] = "cancelled before it started"
        if r["error"] and r["error"].startswith(("never started", "cancelled before")):
            failed.add(r["stage"])


def _apply_live_states(rows: list[dict]) -> None:
    open_rows = [r for r in rows if r["state"] in ("pending", "running") and r["job_id"] and r["executor"] == "slurm"]
    states = slurm_job_states(r["job_id"] for r in open_rows)
    if states is None:
        return
    for r in open_rows:
        live = states.get(r["job_id"]) or states.get(base_job_id(r["job_id"]))
        r["live"] = live
        if live is None:
            continue
        if live in SLURM_FAILED:
            r["state"] = "failed"
            r["error"] = r["error"] or f"SLURM ended the job: {live}"
        elif live == "COMPLETED":
            r["state"] = "failed"
            r["error"] = r["error"] or "job completed without writing done.json"
        elif live in SLURM_WAITING:
            r["state"] = "pending"
        elif live in SLURM_RUNNING:
            r["state"] = "running"


# ---------------------------------------------------------------------------------------------- print

_STYLE = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "bold red", "not started": "dim"}


def _display_path(path: str | None, run_dir: Path | None) -> str:
    if not path or not os.path.exists(path):
        return ""
    if run_dir is not None:
        try:
            return str(Path(path).relative_to(run_dir))
        except ValueError:
            pass
    return path


def print_status(rows: list[dict], console: Any = None, run_dir: str | os.PathLike | None = None) -> None:
    """A rich table of `stage_status` rows (log paths relative to the run dir), then each failed unit's error."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    if run_dir is None and rows:
        run_dir = rows[0].get("run_dir")
    base = Path(run_dir).resolve() if run_dir is not None else None
    table = Table(title=f"lakd run {run_dir}" if run_dir is not None else None, show_lines=False)
    for col in ("stage", "state", "job", "tries", "last metric", "log"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r["stage"] + (f"[{r['item']}]" if r["item"] else "")
        state = r["state"] + (f" ({r['live']})" if r["live"] and r["live"].lower() != r["state"] else "")
        tries = str(r["attempts"] or "") + (f" ({r['requeues']} requeued)" if r["requeues"] else "")
        log_path = _display_path(r["stderr"], base) or _display_path(r["stdout"], base)
        table.add_row(
            Text(name),
            Text(state, style=_STYLE.get(r["state"], "")),
            Text(r["job_id"] or ""),
            Text(tries),
            Text(r["metric_text"]),
            Text(log_path),
        )
    console.print(table)
    for r in rows:
        if r["state"] == "failed" and r["error"]:
            name = r["stage"] + (f"[{r['item']}]" if r["item"] else "")
            msg = Text(name, style="bold red") + Text(f": {r['error']}")
            if r["stderr"] and os.path.exists(r["stderr"]):
                msg += Text(f"\n  log: {r['stderr']}")
            console.print(msg)
