"""Experiments: many runs as one. A grid of variants × seeds on one config, run as units of the job graph
(teachers and caches shared by every variant that reads them), summarized in one report with paired statistics.

    from lakd.experiments import run_experiment
    run_experiment(cfg, "paper", seeds=[0, 1, 2], executor="slurm")       # lakd experiment run --grid paper

Modules, one purpose each: grids (built-in and YAML grids of variants), plan (the units, their configs and
keys), jobs (what each unit runs), runner (`run_experiment`), stats (across seeds, paired against a baseline),
report / markdown / figures / wandb_summary (the report and its views), status (the grid in `lakd status`),
demo (`lakd demo`: the pipeline and its results table). Layer: beside lakd.launch, above lakd.recipes and
lakd.eval; never imported by them. The names below are imported on first use, so `lakd status` (which reads
lakd.experiments.status) pays for no statistics or plotting modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Grid": "lakd.experiments.grids",
    "Variant": "lakd.experiments.grids",
    "load_grid": "lakd.experiments.grids",
    "Statistics": "lakd.experiments.plan",
    "build_experiment_report": "lakd.experiments.report",
    "read_report": "lakd.experiments.report",
    "prepare_experiment": "lakd.experiments.runner",
    "run_experiment": "lakd.experiments.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lakd.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
