"""The job of one unit: `StageTask` runs a stage's recipe inside a submitit job and records the unit's state.

Jobs are ``submitit.helpers.Checkpointable``: on preemption or time-out SLURM signals the job. Inside the
training loop the signal is handed to the loop, which writes its checkpoint and raises Preempted; the task
then requeues its own job (lakd.launch.submitit_adapter). Elsewhere submitit calls `checkpoint()` and requeues
the same job id. Either way the recipe resumes from its own checkpoint in the run dir.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from lakd.config import Config
from lakd.io import atomic_write_json
from lakd.launch.graph import Recipe, Stage, recipe_args, resolve_recipe
from lakd.launch.submitit_adapter import checkpoint_signal, requeue
from lakd.launch.unit_graph import UnitStage
from lakd.launch.unit_settings import unit_settings
from lakd.launch.units import jsonable_output, now, read_done, unit_dir, update_state, upstream_outputs, work_hash
from lakd.train.preemption import Preempted

log = logging.getLogger("lakd.launch")

MAX_REQUEUES = 50  # requeues of one unit after the training loop stopped on a signal


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
    from lakd.train.distributed import announced_rank

    return announced_rank()  # the launcher's rank; RANK inherited from another lakd process does not count


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
        params: dict[str, Any] | None = None,
    ) -> None:
        self.stage = stage
        self.item = item
        self.recipe = recipe
        self.cfg = cfg
        self.run_dir = str(run_dir)
        self.inputs = tuple(inputs)
        self.input_items = dict(input_items or {})
        self.params = None if params is None else dict(params)  # a UnitStage's unit: recipe(cfg, inputs, **params)

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
                "started_at": now(),
                "ended_at": None,
                "error": None,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "incr_attempts": 1,
                "settings": unit_settings(self.stage, self.cfg),  # what a relaunch compares
            }
            if env is not None:
                with contextlib.suppress(Exception):
                    info.update(job_id=str(env.job_id), stdout=str(env.paths.stdout), stderr=str(env.paths.stderr))
            update_state(self.udir, **info)
        t0 = time.time()
        try:
            up = upstream_outputs(self.run_dir, self.inputs, self.input_items)
            recipe = resolve_recipe(self.recipe)
            if self.params is None:
                output = recipe(self.cfg, *recipe_args(self.stage, self.item, up))
            else:
                output = recipe(self.cfg, up, **self.params)
        except Exception as e:
            if isinstance(e, Preempted):
                self._requeue_after_preemption(e, main)  # exits unless requeueing is impossible
            if main:
                update_state(
                    self.udir,
                    state="failed",
                    ended_at=now(),
                    error=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(limit=20),
                )
            raise
        except KeyboardInterrupt:
            if main:
                update_state(self.udir, state="failed", ended_at=now(), error="interrupted (KeyboardInterrupt)")
            raise
        if main:
            atomic_write_json(
                self.udir / "done.json",
                {
                    "stage": self.stage,
                    "item": self.item,
                    "output": jsonable_output(output),
                    "config_hash": work_hash(self.cfg),
                    "settings": unit_settings(self.stage, self.cfg),
                    "finished_at": now(),
                    "seconds": round(time.time() - t0, 3),
                },
            )
            update_state(self.udir, state="done", ended_at=now())
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
        st = update_state(self.udir, state="pending", note=f"preempted: {error}", incr_requeues=1, requeued_at=now())
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
            self.udir, state="pending", note="requeued after preemption/time-out", incr_requeues=1, requeued_at=now()
        )
        return super().checkpoint(*args, **kwargs)


def unit_task(
    stage: Stage, item: str | None, cfg: Config, run_dir: Path, items: dict[str, tuple[str, ...]]
) -> StageTask:
    """The task of one unit of `stage`; `items` are the array items of every stage (its inputs' among them).

    A UnitStage's unit runs with its own config and reads only the upstream units its spec names."""
    if isinstance(stage, UnitStage):
        spec = stage.specs[item]
        return StageTask(
            stage.name,
            item,
            stage.recipe,
            spec.cfg,
            str(run_dir),
            tuple(spec.needs),
            {s: tuple(i) for s, i in spec.needs.items() if i},
            params=spec.params,
        )
    return StageTask(
        stage.name,
        item,
        stage.recipe,
        cfg,
        str(run_dir),
        stage.after,
        {s: items[s] for s in stage.after if items.get(s)},
    )
