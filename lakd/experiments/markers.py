"""Which units of a plan already ran: the markers (done.json, state.json) in `stages/<stage>/<item>/` belong to
the key recorded beside them (key.json). Before a grid runs, markers of another key are set aside under
`keys/<old key>/` (the unit runs again as a new unit), markers of the unit's key come back (a grid ran it before,
or a change was undone), and a unit whose key another item of its stage finished reads that item's output
instead of computing it again. Outputs are never deleted."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from lakd.experiments.plan import KEY_JSON, Plan
from lakd.io import atomic_write_json
from lakd.launch.units import LaunchError, read_json, unit_dir

log = logging.getLogger("lakd.experiments")


def forget_changed_units(plan: Plan) -> list[str]:
    """Set aside the markers (done.json, state.json) of every unit whose key differs from the one they belong to,
    so that it runs again as a new unit, and take back the markers of the new key when that unit ran before (under
    another grid, or before a change that was undone); returns the labels of the units that will run again.
    Outputs are never deleted: a new key is a new work directory, and the old one stays."""
    stale = []
    for stage, units in plan.units.items():
        for item, unit in units.items():
            udir = unit_dir(plan.run_dir, stage, item or None)
            recorded = _recorded_key(udir, stage, item)
            if recorded in unit.get("aliases", []):  # the same unit under the key an older lakd gave it
                atomic_write_json(udir / KEY_JSON, {"key": unit["key"]})
            elif recorded != unit["key"]:
                stale.append((stage, item, recorded))
    _refuse_live_jobs(plan.run_dir, [(stage, item) for stage, item, _ in stale])
    donors: dict[str, dict[str, tuple[str, Path]]] = {}  # stage -> key -> (item, its done.json), read once
    changed = []
    for stage, item, recorded in stale:
        udir = unit_dir(plan.run_dir, stage, item or None)
        key = plan.units[stage][item]["key"]
        was_done = (udir / "done.json").exists()
        for marker in ("done.json", "state.json"):
            if recorded and (udir / marker).exists():
                (udir / "keys" / recorded).mkdir(parents=True, exist_ok=True)
                os.replace(udir / marker, udir / "keys" / recorded / marker)
            (udir / marker).unlink(missing_ok=True)
            if stage != "report" and (udir / "keys" / key / marker).exists():  # a report is the grid's: rewritten
                os.replace(udir / "keys" / key / marker, udir / marker)
        udir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(udir / KEY_JSON, {"key": key})
        label = stage + (f"[{item}]" if item else "")
        same = _adopt_same_computation(plan.run_dir, stage, item, key, donors) if stage != "report" else None
        if same:
            log.info("%s: taken as done (the same computation as %s[%s], whose output it reads)", label, stage, same)
        elif (udir / "done.json").exists():
            log.info("%s: taken back as done (it ran before with these settings)", label)
        elif was_done:
            changed.append(label)
    if changed:
        log.info("changed since the last launch, to run again: %s", ", ".join(changed))
    return changed


def _adopt_same_computation(run_dir: Path, stage: str, item: str, key: str, donors: dict) -> str | None:
    """A unit not done under its key whose key another item of the stage finished (a variant renamed, or the
    same settings reached another way: `la-mtkd-e15` of one grid is `la-mtkd` of a config that made 15 epochs
    the default) is that item's result: its done.json is copied here, output and all, and nothing runs again.
    Returns the donor's item, or None."""
    udir = unit_dir(run_dir, stage, item or None)
    if (udir / "done.json").exists():
        return None
    if stage not in donors:
        found: dict[str, tuple[str, Path]] = {}
        stage_dir = unit_dir(run_dir, stage)
        for other in sorted(p for p in stage_dir.iterdir() if p.is_dir()) if stage_dir.is_dir() else []:
            done = other / "done.json"
            if done.exists():
                recorded = _recorded_key(other, stage, other.name)
                if recorded:
                    found.setdefault(recorded, (other.name, done))
            for aside in sorted((other / "keys").glob("*/done.json")):  # markers of an earlier key, set aside
                found.setdefault(aside.parent.name, (other.name, aside))
        donors[stage] = found
    donor = donors[stage].get(key)
    if donor is None or donor[0] == item:
        return None
    record = read_json(donor[1]) or {}
    if not record.get("output"):
        return None
    atomic_write_json(udir / "done.json", {**record, "item": item, "same_as": donor[0]})
    return donor[0]


def _recorded_key(udir: Path, stage: str, item: str) -> str | None:
    """The key a unit's markers belong to: key.json, or for markers written before it existed, the key in the
    work directory its done.json names (work/<stage>/<item>-<key>/)."""
    key = (read_json(udir / KEY_JSON) or {}).get("key")
    if key or not (udir / "done.json").exists():
        return key
    label = re.escape(f"/work/{stage}/{item or stage}-")
    found = re.search(label + r"([0-9a-f]{10})\b", json.dumps((read_json(udir / "done.json") or {}).get("output")))
    return found.group(1) if found else None


def _refuse_live_jobs(run_dir: Path, units: list[tuple[str, str]]) -> None:
    """A changed unit whose old job SLURM still holds must be cancelled first: it would finish the old work."""
    jobs = {}
    for stage, item in units:
        st = read_json(unit_dir(run_dir, stage, item or None) / "state.json") or {}
        if st.get("executor") == "slurm" and st.get("job_id") and st.get("state") in ("pending", "running"):
            jobs[stage + (f"[{item}]" if item else "")] = st["job_id"]
    if not jobs:
        return
    from lakd.launch.slurm_states import SLURM_RUNNING, SLURM_WAITING, base_job_id, slurm_job_states

    live = slurm_job_states(jobs.values()) or {}
    busy = {u: j for u, j in jobs.items() if live.get(j, live.get(base_job_id(j))) in SLURM_WAITING + SLURM_RUNNING}
    if busy:
        ids = " ".join(sorted({base_job_id(j) for j in busy.values()}))
        raise LaunchError(
            f"{run_dir}: changed units still have jobs on SLURM ({', '.join(f'{u} job {j}' for u, j in busy.items())});"
            f" cancel them (scancel {ids}) or wait, then launch again"
        )
