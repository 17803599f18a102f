"""submitit executors for the three ways of running a stage: slurm, local (a subprocess) and debug (in process).

The kind is always passed explicitly (submitit's AutoExecutor would pick SLURM whenever sbatch is on PATH), and
a stage's StageResources become the executor's parameters (sbatch options under SLURM).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from lakd.choices import EXECUTORS
from lakd.config import ConfigError, StageResources

MAX_TIMEOUT_REQUEUES = 20  # submitit's own count of time-out requeues (preemptions are not counted)


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
