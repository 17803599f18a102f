"""The pipeline as a job graph: shards -> teachers (one job per language) -> cache -> student -> evaluate.

Each stage is a submitit job (the teachers a job array) that runs one recipe. How stages wait on each other:

* ``slurm``: every stage is submitted at once, chained with ``--dependency=afterok:<upstream job ids>``; the
  scheduler starts a stage when its inputs succeeded, so the graph runs on even if the submitting process
  (your shell, or the small driver job of slurm/distill.sh) exits. ``wait=True`` additionally watches the
  jobs, cancels what is left when a stage fails, and raises with the failed stage's log path.
* ``local`` (one subprocess per job) and ``debug`` (in this process, no subprocess): stage by stage, one job
  at a time (array items one after another: on one machine they would share the GPUs).

A job reads its inputs from its upstream stages' ``done.json`` when it starts, never from the driver, which
is what makes dependency chaining and relaunching work. Per stage and array item (a *unit*), under
``run_dir/stages/<stage>[/<item>]/``:

* ``state.json``: pending | running | done | failed, job id, attempt and requeue counts, timestamps, log paths,
  the error of a failed attempt; written atomically under a file lock (the driver and the job both write).
* ``done.json``: the unit's output (a checkpoint dir, a cache dir, a report summary) and the config hash;
  written atomically when the recipe returned. A relaunch skips units that have it.

Jobs are ``submitit.helpers.Checkpointable``: on preemption or time-out SLURM signals the job, submitit calls
``checkpoint()`` and requeues the same job id; the recipe then resumes from its own checkpoint in the run dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import importlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakd.choices import EXECUTORS
from lakd.config import (
    Config,
    ConfigError,
    LaunchConfig,
    StageResources,
    WandbConfig,
    config_hash,
    dataclass_from_dict,
    save_config,
)
from lakd.io import atomic_write_json
from lakd.launch.submitit_adapter import checkpoint_signal, requeue
from lakd.train.preemption import Preempted

log = logging.getLogger("lakd.launch")

STAGES = ("shards", "teachers", "cache", "student", "evaluate")
# other names accepted as keys of launch.resources (the built-in configs say "teacher")
STAGE_ALIASES = {"prepare": "shards", "data": "shards", "teacher": "teachers", "distill": "student", "eval": "evaluate"}
DEFAULT_RECIPES = {
    "shards": "lakd.recipes.prepare:run",  # run(cfg) -> data dir | None
    "teachers": "lakd.recipes.finetune:run_teacher",  # run_teacher(cfg, language) -> checkpoint dir
    "cache": "lakd.recipes.cache:run",  # run(cfg, teacher_dirs) -> cache dir
    "student": "lakd.recipes.distill:run",  # run(cfg, teacher_dirs, cache_dir | None) -> checkpoint dir
    "evaluate": "lakd.recipes.evaluate:run",  # run(cfg, checkpoint_dir) -> report dict
}
MAX_TIMEOUT_REQUEUES = 20  # submitit's own count of time-out requeues (preemptions are not counted)
MAX_REQUEUES = 50  # requeues of one unit after the training loop stopped on a signal

Recipe = Callable[..., Any] | str


class LaunchError(RuntimeError):
    """A stage of the graph failed; the message names the stage, the job and its log."""


# --------------------------------------------------------------------------------------------- the graph


@dataclass
class Stage:
    """One node of the graph. `items` makes it an array stage (one job per item, e.g. per language)."""

    name: str
    recipe: Recipe
    after: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    resources: StageResources = field(default_factory=StageResources)

    @property
    def units(self) -> list[str | None]:
        return list(self.items) if self.items else [None]

    def pending_units(self, run_dir: str | os.PathLike) -> list[str | None]:
        return [u for u in self.units if read_done(unit_dir(run_dir, self.name, u)) is None]

    def is_done(self, run_dir: str | os.PathLike) -> bool:
        return not self.pending_units(run_dir)


def canonical_stage(name: str) -> str:
    name = STAGE_ALIASES.get(name, name)
    if name not in STAGES:
        raise ConfigError(
            f"unknown stage {name!r}; stages are {', '.join(STAGES)} "
            f"(also accepted: {', '.join(sorted(STAGE_ALIASES))})"
        )
    return name


def stage_resources(cfg: Config, stage: str) -> StageResources:
    """Resources of a stage: launch.resources[<stage or alias>] over launch.resources['default']."""
    stage = canonical_stage(stage)
    table = cfg.launch.resources or {}
    merged: dict[str, Any] = {}
    for key in ("default", *[a for a, s in STAGE_ALIASES.items() if s == stage], stage):
        if key not in table:
            continue
        entry = table[key]
        if dataclasses.is_dataclass(entry):
            entry = dataclasses.asdict(entry)
        if not isinstance(entry, dict):
            raise ConfigError(f"launch.resources.{key}: expected a mapping of StageResources fields, got {entry!r}")
        merged.update(entry)
    for key in table:  # an unknown stage name is an error, not a silently ignored entry
        if key != "default" and STAGE_ALIASES.get(key, key) not in STAGES:
            raise ConfigError(
                f"launch.resources.{key}: unknown stage; stages are default, {', '.join(STAGES)} "
                f"(also accepted: {', '.join(sorted(STAGE_ALIASES))})"
            )
    return dataclass_from_dict(StageResources, merged, where=f"launch.resources.{stage}")


def _data_present(cfg: Config) -> bool:
    from lakd.data.shards import expand_urls

    for split in ("train", "dev", "test"):
        spec = getattr(cfg.data, split)
        if spec is None and cfg.synth:
            spec = str(Path(cfg.run_dir) / "data" / split)
        if spec is None:
            continue
        try:
            expand_urls(spec)
        except (FileNotFoundError, ValueError):
            return False
    return True


def build_graph(
    cfg: Config, run_dir: str | os.PathLike | None = None, recipes: dict[str, Recipe] | None = None
) -> list[Stage]:
    """The stages this config needs, in run order.

    `shards` only when the config synthesizes its corpus (`synth:`) and the data is not there yet; `cache`
    only with `distill.use_cache`. `recipes` replaces stage functions (a callable or "module:function").
    """
    run_dir = Path(run_dir or cfg.run_dir)
    recipes = {**DEFAULT_RECIPES, **{canonical_stage(k): v for k, v in (recipes or {}).items()}}
    cfg_here = cfg.copy(run_dir=str(run_dir)) if str(run_dir) != str(cfg.run_dir) else cfg
    stages: list[Stage] = []
    if cfg.synth and (not _data_present(cfg_here) or (unit_dir(run_dir, "shards") / "state.json").exists()):
        stages.append(Stage("shards", recipes["shards"]))  # kept once it ran, so that status shows it
    teachers_after = ("shards",) if stages else ()
    stages.append(Stage("teachers", recipes["teachers"], after=teachers_after, items=tuple(cfg.languages)))
    if cfg.distill.use_cache:
        stages.append(Stage("cache", recipes["cache"], after=("teachers",)))
    stages.append(
        Stage("student", recipes["student"], after=("teachers", "cache") if cfg.distill.use_cache else ("teachers",))
    )
    stages.append(Stage("evaluate", recipes["evaluate"], after=("student",)))
    for s in stages:
        s.resources = stage_resources(cfg, s.name)
    return stages


# ------------------------------------------------------------------------------------ per-unit markers


def unit_dir(run_dir: str | os.PathLike, stage: str, item: str | None = None) -> Path:
    d = Path(run_dir) / "stages" / stage
    return d / item if item is not None else d


def _now() -> str:
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
        state["updated_at"] = _now()
        atomic_write_json(path, state)
    return state


def work_hash(cfg: Config) -> str:
    """The config hash recorded in done.json, without the sections that do not change results (launch, W&B)."""
    return config_hash(dataclasses.replace(cfg, launch=LaunchConfig(), wandb=WandbConfig()))


def _jsonable(value: Any) -> Any:
    """Outputs as stored in done.json: per-utterance predictions of a report stay in the report files."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "predictions"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
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


def _recipe_args(stage: str, item: str | None, up: dict) -> tuple:
    if stage == "shards":
        return ()
    if stage == "teachers":
        return (item,)
    if stage == "cache":
        return (up["teachers"],)
    if stage == "student":
        return (up["teachers"], up.get("cache"))
    if stage == "evaluate":
        return (up["student"],)
    raise LaunchError(f"unknown stage {stage!r}")


def resolve_recipe(recipe: Recipe) -> Callable[..., Any]:
    if callable(recipe):
        return recipe
    module, _, name = str(recipe).partition(":")
    if not name:
        raise LaunchError(f"recipe {recipe!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if fn is None:
        raise LaunchError(f"recipe {recipe!r}: module {module} has no {name!r}")
    return fn


# ------------------------------------------------------------------------------------- the job callable


def _job_env() -> Any | None:
    try:
        import submitit

        return submitit.JobEnvironment()
    except Exception:  # not inside a submitit job (a direct call)
        return None


def _rank() -> int:
    """This task's global rank: only rank 0 of a multi-task job records the unit's state."""
    env = _job_env()
    if env is not None:
        with contextlib.suppress(Exception):
            return int(env.global_rank)
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency
    _Checkpointable = object  # type: ignore[assignment,misc]


class StageTask(_Checkpointable):  # type: ignore[misc,valid-type]
    """Runs one unit (a stage, or one item of an array stage) inside a job, recording its state.

    Requeue-safe: preempted or timed out, submitit calls `checkpoint()`, which marks the unit pending and
    resubmits this same object; the recipe resumes from its own checkpoint under the run dir. A unit whose
    done.json exists returns its recorded output at once.
    """

    def __init__(
        self,
        stage: str,
        item: str | None,
        recipe: Recipe,
        cfg: Config,
        run_dir: str,
        inputs: tuple[str, ...] = (),
        input_items: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.stage = stage
        self.item = item
        self.recipe = recipe
        self.cfg = cfg
        self.run_dir = str(run_dir)
        self.inputs = tuple(inputs)
        self.input_items = dict(input_items or {})

    @property
    def udir(self) -> Path:
        return unit_dir(self.run_dir, self.stage, self.item)

    @property
    def label(self) -> str:
        return f"{self.stage}[{self.item}]" if self.item else self.stage

    def __call__(self) -> Any:
        main = _rank() == 0
        self._bridge_checkpoint_signal()
        done = read_done(self.udir)
        if done is not None:
            log.info("%s already done: %s", self.label, done.get("output"))
            return done.get("output")
        if main:
            env = _job_env()
            info: dict[str, Any] = {
                "state": "running",
                "started_at": _now(),
                "ended_at": None,
                "error": None,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "incr_attempts": 1,
            }
            if env is not None:
                with contextlib.suppress(Exception):
                    info.update(job_id=str(env.job_id), stdout=str(env.paths.stdout), stderr=str(env.paths.stderr))
            update_state(self.udir, **info)
        t0 = time.time()
        try:
            up = upstream_outputs(self.run_dir, self.inputs, self.input_items)
            output = resolve_recipe(self.recipe)(self.cfg, *_recipe_args(self.stage, self.item, up))
        except Exception as e:
            if isinstance(e, Preempted):
                self._requeue_after_preemption(e, main)  # exits unless requeueing is impossible
            if main:
                update_state(
                    self.udir,
                    state="failed",
                    ended_at=_now(),
                    error=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(limit=20),
                )
            raise
        except KeyboardInterrupt:
            if main:
                update_state(self.udir, state="failed", ended_at=_now(), error="interrupted (KeyboardInterrupt)")
            raise
        if main:
            atomic_write_json(
                self.udir / "done.json",
                {
                    "stage": self.stage,
                    "item": self.item,
                    "output": _jsonable(output),
                    "config_hash": work_hash(self.cfg),
                    "finished_at": _now(),
                    "seconds": round(time.time() - t0, 3),
                },
            )
            update_state(self.udir, state="done", ended_at=_now())
        return output

    # ----------------------------------------------------------------- preemption and time limits
    def _bridge_checkpoint_signal(self) -> None:
        """Route submitit's checkpoint signal (USR2, sent by SLURM before the time limit and on preemption)
        to the training loop when one listens for SIGUSR1 (lakd.train.engine does): it then writes `last/`
        at the next step and raises Preempted, and `_requeue_after_preemption` requeues the job, so no step
        is lost. Outside a training loop submitit's own handler runs (checkpoint() + requeue at once)."""
        env = _job_env()
        if (
            env is None
            or env.cluster not in ("slurm", "local")
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        usr = checkpoint_signal(env)
        if usr == signal.SIGUSR1:  # the training loop's handler replaces submitit's: nothing to bridge
            return
        previous = signal.getsignal(usr)
        udir = self.udir

        def bridge(signum: int, frame: Any) -> None:
            listener = signal.getsignal(signal.SIGUSR1)
            if callable(listener):
                update_state(udir, note=f"{signal.Signals(signum).name}: the training loop saves and stops")
                listener(signal.SIGUSR1, frame)
            elif callable(previous):
                previous(signum, frame)

        signal.signal(usr, bridge)

    def _requeue_after_preemption(self, error: Exception, main: bool) -> None:
        """The recipe stopped on a signal after writing a resumable checkpoint: requeue this same job."""
        env = _job_env()
        if not main:  # rank 0 requeues the whole job; the other ranks wait to be stopped with it
            time.sleep(120)
            sys.exit(-1)
        st = update_state(self.udir, state="pending", note=f"preempted: {error}", incr_requeues=1, requeued_at=_now())
        if env is None or env.cluster not in ("slurm", "local") or st["requeues"] > MAX_REQUEUES:
            return  # cannot requeue here (debug executor, direct call) or too often: the unit fails
        log.warning("%s: %s; requeueing job %s", self.label, error, env.job_id)
        try:
            requeue(env, MAX_REQUEUES - st["requeues"])  # `scontrol requeue` / local restart
        except subprocess.SubprocessError as e:  # e.g. SLURM is already requeueing it (PreemptMode=REQUEUE)
            log.warning("%s: scontrol requeue failed (%s); leaving the requeue to SLURM", self.label, e)
        sys.exit(-1)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Preempted or timed out: mark the unit pending (requeued) and resubmit this same task."""
        update_state(
            self.udir, state="pending", note="requeued after preemption/time-out", incr_requeues=1, requeued_at=_now()
        )
        return super().checkpoint(*args, **kwargs)


# ------------------------------------------------------------------------------------------- executors


def _signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which SLURM signals the job to checkpoint (submitit default 90)."""
    return int(min(90, max(10, time_min * 60 // 5)))


def _source_root() -> str:
    import lakd

    return str(Path(lakd.__file__).resolve().parents[1])


def make_executor(kind: str, folder: str | os.PathLike, res: StageResources, name: str, dependency: str | None = None):
    """A submitit executor for one stage. `kind` is always explicit: submitit's AutoExecutor would pick SLURM
    whenever sbatch is on PATH."""
    import submitit

    if kind not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    # requeues after a time-out (preemptions are not counted): long trainings chain many time-limited jobs
    extra = {"slurm_max_num_timeout": MAX_TIMEOUT_REQUEUES} if kind == "slurm" else {}
    ex = submitit.AutoExecutor(folder=folder, cluster=kind, **extra)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": int(res.time_min),
        "nodes": int(res.nodes),
        "tasks_per_node": int(res.tasks_per_node),
    }
    if res.gpus:
        params["gpus_per_node"] = int(res.gpus)
    if kind == "slurm":
        params.update(cpus_per_task=int(res.cpus), mem_gb=float(res.mem_gb))
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(res, key)
            if value:
                params[f"slurm_{key}"] = str(value)
        root = _source_root()
        params["slurm_setup"] = [
            f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}",
            *[str(line) for line in res.setup],
        ]
        params["slurm_signal_delay_s"] = _signal_delay_s(int(res.time_min))
        params["slurm_additional_parameters"] = {"requeue": True}  # requeue-able even where JobRequeue=0
        if dependency:
            params["slurm_dependency"] = dependency
    elif kind == "local":
        params["cpus_per_task"] = int(res.cpus)
    ex.update_parameters(**params)
    return ex


def _base_job_id(job_id: str) -> str:
    return str(job_id).split("_", 1)[0]


# ---------------------------------------------------------------------------------------------- launch


def _graph_record(cfg: Config, stages: list[Stage], kind: str) -> dict:
    return {
        "executor": kind,
        "launched_at": _now(),
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


def _task(stage: Stage, item: str | None, cfg: Config, run_dir: Path, items: dict[str, tuple[str, ...]]) -> StageTask:
    return StageTask(
        stage.name,
        item,
        stage.recipe,
        cfg,
        str(run_dir),
        stage.after,
        {s: items[s] for s in stage.after if items.get(s)},
    )


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
    if stages[0].name == "shards" and stages[0].is_done(run_dir) and not _data_present(cfg):
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
        jobs = _submit_slurm(cfg, run_dir, stages, items, summary)
        if wait:
            _wait_slurm(run_dir, stages, jobs, poll_s if poll_s is not None else 10.0)
    else:
        _run_sequential(kind, cfg, run_dir, stages, items, summary)
    if wait:
        summary["outputs"] = upstream_outputs(run_dir, [s.name for s in stages], items)
    return summary


def _mark_submitted(udir: Path, kind: str) -> None:
    update_state(
        udir,
        state="pending",
        executor=kind,
        submitted_at=_now(),
        started_at=None,
        ended_at=None,
        error=None,
        job_id=None,
    )


def _record_job(udir: Path, job: Any) -> None:
    """The driver's view of a submitted job (the job itself records the same when it starts)."""
    fields: dict[str, Any] = {"job_id": str(job.job_id)}
    with contextlib.suppress(Exception):
        fields.update(stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
    update_state(udir, **fields)


def _refuse_live_duplicates(run_dir: Path, stages: list[Stage]) -> None:
    """A relaunch must not submit a second copy of a unit whose job SLURM still holds."""
    from lakd.launch.status import SLURM_RUNNING, SLURM_WAITING, slurm_job_states

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
        k: j for k, j in open_units.items() if live.get(j, live.get(_base_job_id(j))) in SLURM_WAITING + SLURM_RUNNING
    }
    if busy:
        listing = ", ".join(f"{k} (job {j})" for k, j in busy.items())
        raise LaunchError(
            f"{run_dir} is still queued or running on SLURM: {listing}. Wait for it "
            f"(lakd status {run_dir}) or cancel it "
            f"(scancel {' '.join(sorted({_base_job_id(j) for j in busy.values()}))}) "
            "before launching again."
        )


def _submit_slurm(cfg: Config, run_dir: Path, stages: list[Stage], items: dict, summary: dict) -> dict:
    import submitit

    submitted: dict[str, list[tuple[str | None, Any]]] = {}  # stage -> [(unit, job)]
    _refuse_live_duplicates(run_dir, stages)
    for stage in stages:
        todo = stage.pending_units(run_dir)
        if not todo:
            summary["skipped"].append(stage.name)
            log.info("stage %s: done, skipped", stage.name)
            continue
        deps = sorted({_base_job_id(j.job_id) for s in stage.after for _, j in submitted.get(s, [])})
        ex = make_executor(
            "slurm",
            run_dir / "stages" / stage.name / "logs" / "%j",
            stage.resources,
            f"{cfg.name}-{stage.name}",
            dependency=("afterok:" + ":".join(deps)) if deps else None,
        )
        tasks = [_task(stage, u, cfg, run_dir, items) for u in todo]
        for u in todo:
            _mark_submitted(unit_dir(run_dir, stage.name, u), "slurm")
        with submitit.helpers.clean_env():  # a driver inside a SLURM job must not leak its SLURM_* settings
            if stage.items:
                with ex.batch():
                    jobs = [ex.submit(t) for t in tasks]
            else:
                jobs = [ex.submit(tasks[0])]
        for u, job in zip(todo, jobs):
            _record_job(unit_dir(run_dir, stage.name, u), job)
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


def downstream(stages: list[Stage], failed: set[str]) -> set[str]:
    """Stages that (transitively) need one of `failed`."""
    out: set[str] = set()
    for s in stages:  # stages are in run order
        if set(s.after) & (failed | out):
            out.add(s.name)
    return out


def _wait_slurm(
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
                    ended_at=_now(),  # SLURM cancelled it (kill_invalid_depend)
                    error=f"cancelled: it needs {', '.join(sorted(failed_stages))}, which failed",
                )
            elif read_done(udir) is None:
                label = stage + (f"[{u}]" if u else "")
                reason = _failure_text(udir, job)
                if (read_json(udir / "state.json") or {}).get("state") != "failed":
                    update_state(udir, state="failed", ended_at=_now(), error=reason)
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
                    ended_at=_now(),
                    error=f"cancelled: it needs {', '.join(sorted(failed_stages))}, which failed",
                )
            else:
                pending.append((stage, u, job))
        if pending:
            time.sleep(poll_s)
    if failures:
        raise LaunchError("; ".join(failures))


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
            _mark_submitted(udir, kind)
            job = ex.submit(_task(stage, u, cfg, run_dir, items))
            _record_job(udir, job)
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
                    update_state(udir, state="failed", ended_at=_now(), error=f"{type(e).__name__}: {e}")
                    state = read_json(udir / "state.json") or {}
                logs = state.get("stderr") or ""
                failures.append(
                    f"{label} failed (job {job.job_id}): {state.get('error') or type(e).__name__}"
                    + (f" (log: {logs})" if logs else "")
                )
                failed_stages.add(stage.name)
    if failures:
        raise LaunchError("stage " + "; stage ".join(failures))
