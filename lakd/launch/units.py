"""Per-unit markers of a launched run: a *unit* is a stage, or one item of an array stage (a teacher).

Under ``run_dir/stages/<stage>[/<item>]/``:

* ``state.json``: pending | running | done | failed, job id, attempt and requeue counts, timestamps, log paths,
  the error of a failed attempt; written atomically under a file lock (the driver and the job both write).
* ``done.json``: the unit's output (a checkpoint dir, a cache dir, a report summary) and the config hash;
  written atomically when the recipe returned. A relaunch skips units that have it.

A job reads its inputs from its upstream units' ``done.json`` when it starts, never from the driver, which is
what makes dependency chaining and relaunching work (`upstream_outputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lakd.config import Config, LaunchConfig, WandbConfig, config_hash
from lakd.io import atomic_write_json


class LaunchError(RuntimeError):
    """A stage of the graph failed, or its markers cannot be read; the message names the stage, job and log."""


def unit_dir(run_dir: str | os.PathLike, stage: str, item: str | None = None) -> Path:
    d = Path(run_dir) / "stages" / stage
    return d / item if item is not None else d


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_json(path: str | os.PathLike) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise LaunchError(f"{path}: not valid JSON ({e}); delete it to reset this stage") from e


def read_done(udir: str | os.PathLike) -> dict | None:
    return read_json(Path(udir) / "done.json")


_held: set[str] = set()  # locks this process holds: a signal handler re-entering must not wait on itself


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (the driver and the job both update state.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path)
    if key in _held:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_state(udir: str | os.PathLike, **fields: Any) -> dict:
    """Merge `fields` into the unit's state.json (read-modify-write under a lock, atomic replace)."""
    path = Path(udir) / "state.json"
    with _locked(path):
        state = read_json(path) or {}
        incr = {k[5:]: v for k, v in fields.items() if k.startswith("incr_")}
        state.update({k: v for k, v in fields.items() if not k.startswith("incr_")})
        for k, v in incr.items():
            state[k] = int(state.get(k) or 0) + v
        state["updated_at"] = now()
        atomic_write_json(path, state)
    return state


def work_hash(cfg: Config) -> str:
    """The config hash recorded in done.json, without the sections that do not change results (launch, W&B)."""
    return config_hash(dataclasses.replace(cfg, launch=LaunchConfig(), wandb=WandbConfig()))


def jsonable_output(value: Any) -> Any:
    """Outputs as stored in done.json: per-utterance predictions of a report stay in the report files."""
    if isinstance(value, dict):
        return {k: jsonable_output(v) for k, v in value.items() if k != "predictions"}
    if isinstance(value, (list, tuple)):
        return [jsonable_output(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return value.item()  # numpy / torch scalars
    except Exception:
        return str(value)


def upstream_outputs(run_dir: str | os.PathLike, stages: Sequence[str], items: dict[str, Sequence[str]]) -> dict:
    """{stage: output} (array stages: {stage: {item: output}}) from the upstream done.json files."""
    out: dict[str, Any] = {}
    for stage in stages:
        units = list(items.get(stage) or [None])
        values = {}
        for u in units:
            done = read_done(unit_dir(run_dir, stage, u))
            if done is None:
                where = unit_dir(run_dir, stage, u) / "done.json"
                raise LaunchError(f"stage {stage}{'[' + u + ']' if u else ''} has not finished: {where} is missing")
            values[u] = done.get("output")
        out[stage] = values if items.get(stage) else values[None]
    return out


def mark_submitted(udir: Path, kind: str) -> None:
    """The driver is about to submit the unit: pending, and whatever an earlier attempt left is cleared."""
    update_state(
        udir,
        state="pending",
        executor=kind,
        submitted_at=now(),
        started_at=None,
        ended_at=None,
        error=None,
        job_id=None,
    )


def record_job(udir: Path, job: Any) -> None:
    """The driver's view of a submitted job (the job itself records the same when it starts)."""
    fields: dict[str, Any] = {"job_id": str(job.job_id)}
    with contextlib.suppress(Exception):
        fields.update(stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
    update_state(udir, **fields)
