"""The grid view of `lakd status` for an experiment directory: one row per variant, one column per seed.

A cell is where that run stands: the state of its furthest unit (teachers → student → evaluate), and the test
UA once its evaluation is done; one grid view per grid run in the directory (grids/<grid>/experiment.json).
Read from experiment.json and the same unit markers as the unit table, so it costs no import of torch and works
while the jobs run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lakd.experiments.layout import EXPERIMENT_JSON, grid_dir, grids_in
from lakd.launch.units import read_done, read_json, unit_dir


def _state(run_dir: Path, stage: str, item: str | None) -> str:
    if read_done(unit_dir(run_dir, stage, item)) is not None:
        return "done"
    return (read_json(unit_dir(run_dir, stage, item) / "state.json") or {}).get("state", "not started")


def _run_cell(run_dir: Path, item: str, units: list) -> dict[str, Any]:
    """{state, ua, stage} of one run (its evaluate unit, else the first unfinished unit it needs)."""
    done = read_done(unit_dir(run_dir, "evaluate", item))
    if done is not None:
        ua = ((done.get("output") or {}).get("metrics") or {}).get("overall", {}).get("ua")
        return {"state": "done", "ua": ua, "stage": "evaluate"}
    for stage, i in units:
        state = _state(run_dir, stage, i)
        if state in ("failed", "running"):
            return {"state": state, "ua": None, "stage": f"{stage}[{i}]"}
    state = _state(run_dir, "evaluate", item)
    return {"state": "pending" if state == "not started" else state, "ua": None, "stage": "evaluate"}


def grid_status(run_dir: str | os.PathLike, grid: str) -> dict:
    """{"name", "grid", "seeds", "rows": [{"variant", "label", "cells": {seed: cell}}], "report": path|None}."""
    run_dir = Path(run_dir)
    plan = read_json(grid_dir(run_dir, grid) / EXPERIMENT_JSON) or {}
    labels = {v["name"]: v["label"] for v in plan.get("variants", [])}
    rows = []
    for variant in labels:  # the grid's order (experiment.json's mappings are written with sorted keys)
        by_seed = plan.get("runs", {}).get(variant, {})
        run_units = plan.get("run_units", {}).get(variant, {})
        cells = {seed: _run_cell(run_dir, item, run_units.get(seed, [])) for seed, item in by_seed.items()}
        rows.append({"variant": variant, "label": labels.get(variant, variant), "cells": cells})
    report = grid_dir(run_dir, grid) / "report.md"
    return {
        "name": plan.get("name"),
        "grid": plan.get("grid"),
        "seeds": [str(s) for s in plan.get("seeds", [])],
        "rows": rows,
        "report": str(report) if report.exists() else None,
    }


_STYLE = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "bold red"}


def print_grid(status: dict, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"experiment {status['name']}: grid {status['grid']}")
    table.add_column("variant")
    for seed in status["seeds"]:
        table.add_column(f"seed {seed}")
    for row in status["rows"]:
        cells = []
        for seed in status["seeds"]:
            c = row["cells"].get(seed)
            if c is None:
                cells.append(Text("–"))
                continue
            text = f"UA {100 * c['ua']:.1f}" if c["ua"] is not None else c["state"]
            if c["state"] in ("running", "failed") and c["stage"] != "evaluate":
                text += f" ({c['stage']})"
            cells.append(Text(text, style=_STYLE.get(c["state"], "")))
        table.add_row(Text(row["label"]), *cells)
    console.print(table)
    if status["report"]:
        console.print(f"report: {status['report']}")


def print_grids(run_dir: str | os.PathLike, console: Any = None, grid: str | None = None) -> None:
    """The grid view of each grid run in the directory (or of `grid` only)."""
    for name in [grid] if grid else grids_in(run_dir):
        print_grid(grid_status(run_dir, name), console)
