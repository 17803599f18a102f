"""Where an experiment directory keeps each grid's files; imports nothing heavy (`lakd status` reads it).

    <run_dir>/grids/<grid>/experiment.json   the plan of a grid run in the directory (variants, seeds, unit keys)
    <run_dir>/grids/<grid>/report.md ...     its report (lakd.experiments.report)
    <run_dir>/stages/<stage>/<item>/         the unit markers every grid of the directory shares (lakd.launch.units)
    <run_dir>/work/<stage>/<item>-<key>/     the units' outputs

Several grids run into one directory share the units they have in common (the same teachers, say) and each keeps
its own plan and report, so a second grid never overwrites the first one's.
"""

from __future__ import annotations

import json
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


# what an older lakd (one plan per directory) kept at the top of an experiment directory
_LEGACY = (EXPERIMENT_JSON, "report.md", "report.json", "figures", "wandb-summary")


def adopt_legacy_plan(run_dir: str | os.PathLike) -> str | None:
    """Move the plan and report an older lakd kept at the top of the directory into grids/<its grid>/ (unless that
    grid already has its own); returns the grid's name, or None when there was nothing to move."""
    top = Path(run_dir) / EXPERIMENT_JSON
    if not top.exists():
        return None
    grid = json.loads(top.read_text()).get("grid")
    dest = grid_dir(run_dir, grid) if grid else None
    if dest is None or (dest / EXPERIMENT_JSON).exists():
        return None
    dest.mkdir(parents=True, exist_ok=True)
    for name in _LEGACY:
        if (Path(run_dir) / name).exists():
            os.replace(Path(run_dir) / name, dest / name)
    return grid
