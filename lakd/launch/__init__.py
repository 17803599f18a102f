"""Launching the pipeline as a submitit job graph (SLURM, local processes, or in-process debug).

    from lakd.launch import launch, stage_status, print_status
    launch(cfg, "runs/exp1", executor="slurm", wait=False)   # shards -> teachers -> cache -> student -> evaluate
    print_status(stage_status("runs/exp1"))

Modules, one purpose each: graph (the stages a config needs), unit_graph (stages whose units each have their
own config and inputs: experiment grids), units (per-unit state and done markers), task (the job of one unit,
with its preemption and requeue), executors (submitit executors per kind), local_runner (local and debug runs,
up to N jobs at once), slurm_submit / slurm_states (submitting to SLURM and waiting; what SLURM says about
jobs), submitit_adapter (the private submitit calls), launcher (`launch`, `run_stages`), status
(`stage_status`, `print_status`).
submitit and rich are imported lazily, and torch never, so `import lakd.launch` stays cheap.
"""

from lakd.launch.graph import STAGES, Stage, build_graph
from lakd.launch.launcher import launch, run_stages
from lakd.launch.status import print_status, stage_status
from lakd.launch.task import StageTask
from lakd.launch.unit_graph import UnitSpec, UnitStage
from lakd.launch.units import LaunchError

__all__ = [
    "STAGES",
    "LaunchError",
    "Stage",
    "StageTask",
    "UnitSpec",
    "UnitStage",
    "build_graph",
    "launch",
    "print_status",
    "run_stages",
    "stage_status",
]
