"""Where an experiment directory keeps each grid's files; imports nothing heavy (`lakd status` reads it).

    <run_dir>/grids/<grid>/experiment.json   the plan of a grid run in the directory (variants, seeds, unit keys)
    <run_dir>/grids/<grid>/report.md ...     its report (lakd.experiments.report)
    <run_dir>/stages/<stage>/<item>/         the unit markers every grid of the directory shares (lakd.launch.units)
    <run_dir>/work/<stage>/<item>-<key>/     the units' outputs

Several grids run into one directory share the units they have in common (the same teachers, say) and each keeps
its own plan and report, so a second grid never overwrites the first one's.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPERIMENT_JSON = "experiment.json"
GRIDS = "grids"


def grid_dir(run_dir: str | os.PathLike, grid: str) -> Path:
    return Path(run_dir) / GRIDS / grid


def grids_in(run_dir: str | os.PathLike) -> list[str]:
    """The grids run in an experiment directory (those with an experiment.json), sorted by name."""
    root = Path(run_dir) / GRIDS
    return sorted(p.parent.name for p in root.glob(f"*/{EXPERIMENT_JSON}")) if root.is_dir() else []
