"""Whether a unit that ran before may be resumed or skipped: its result-affecting settings, compared before
anything is submitted.

A unit's job records `unit_settings` (lakd.config.diff.result_settings of its config) in its state.json when it
starts and in its done.json when it ends. A relaunch compares them with
today's for every unit, before it submits a single job: a done unit would otherwise be skipped with another
config's result, a started one resumed with a mix of two. What happens on a change is the config's
`on_config_change` (CLI: --restart / --resume-changed): refuse (default: `ConfigChanged` naming the units and
each `key: old -> new`), restart (a done unit's done.json is removed so it runs again; its recipe starts its
own run directory afresh) or resume (kept, with a warning). Units recorded before settings were (only a config
hash) get the old warning. The units of an experiment grid (UnitStage) are left to its plan: each has a key made
of its result settings and a work directory of its own, so a changed unit is a new unit (lakd.experiments.plan).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lakd.config import Config
from lakd.config.diff import changed_error, result_settings, settings_changes
from lakd.launch.graph import Stage
from lakd.launch.unit_graph import UnitStage, unit_config
from lakd.launch.units import read_done, read_json, unit_dir, work_hash

log = logging.getLogger("lakd.launch")


def unit_settings(stage: str, cfg: Config) -> dict[str, Any]:
    """What a unit's result depends on: the settings of its config that change its stage's result."""
    return result_settings(cfg, stage)


def _label(stage: str, item: str | None) -> str:
    return stage + (f"[{item}]" if item else "")


def settle_changed_units(cfg: Config, run_dir: str | Path, stages: list[Stage]) -> dict[str, list[str]]:
    """Compare every unit's recorded settings with today's and act on changes as `cfg.on_config_change` says;
    returns {unit label: changes}. Raises ConfigChanged (refuse) before anything was touched."""
    changed: dict[str, list[str]] = {}
    done_units: dict[str, Path] = {}
    for stage in stages:
        if isinstance(stage, UnitStage):  # an experiment plan's unit: its key already is its result settings
            continue
        for item in stage.units:
            udir = unit_dir(run_dir, stage.name, item)
            done = read_done(udir)
            recorded = (done or {}).get("settings")
            if recorded is None and done is None:
                recorded = (read_json(udir / "state.json") or {}).get("settings")  # started, not finished
            if recorded is None:
                _warn_by_hash(stage, item, cfg, done, udir)
                continue
            changes = settings_changes(recorded, unit_settings(stage.name, unit_config(stage, item, cfg)))
            if changes:
                changed[_label(stage.name, item)] = changes
                if done is not None:
                    done_units[_label(stage.name, item)] = udir
    if not changed:
        return changed
    policy = cfg.on_config_change
    if policy == "refuse":
        all_changes = sorted({c for cs in changed.values() for c in cs})
        raise changed_error(f"{run_dir} ({', '.join(changed)})", all_changes)
    for label, changes in changed.items():
        if policy == "restart" and label in done_units:
            (done_units[label] / "done.json").unlink(missing_ok=True)
        log.warning(
            "%s: config changed (%s): %s", label, "; ".join(changes), "redone" if policy == "restart" else "kept"
        )
    return changed


def _warn_by_hash(stage: Stage, item: str | None, cfg: Config, done: dict | None, udir: Path) -> None:
    """A unit finished before settings were recorded: the old check (the whole config's hash), a warning."""
    h = work_hash(unit_config(stage, item, cfg))
    if done is not None and done.get("config_hash") not in (None, h):
        log.warning(
            "%s was done with another config (hash %s, now %s): kept. Delete %s and the recipe's output to redo it.",
            _label(stage.name, item),
            done["config_hash"],
            h,
            udir,
        )
