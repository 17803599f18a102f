"""Launching the pipeline as a submitit job graph (SLURM, local processes, or in-process debug).

    from lakd.launch import launch, stage_status, print_status
    launch(cfg, "runs/exp1", executor="slurm", wait=False)   # shards -> teachers -> cache -> student -> evaluate
    print_status(stage_status("runs/exp1"))

The modules import submitit and rich lazily, so `import lakd.launch` stays cheap.
"""

from lakd.launch.graph import STAGES, LaunchError, Stage, StageTask, build_graph, launch
from lakd.launch.status import print_status, stage_status

__all__ = ["STAGES", "LaunchError", "Stage", "StageTask", "build_graph", "launch", "print_status", "stage_status"]
