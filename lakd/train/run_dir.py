"""A training run's directory: who writes it (the run lock), which settings it was started with, and starting
it afresh.

    with claim_run_dir(out_dir, result_settings(cfg, "teachers"), cfg.on_config_change):
        ...  # check done.json, train, write done.json

`claim_run_dir` takes the directory's run lock (lakd.run_lock: a second run gets RunDirBusy naming the holder)
and compares the run's result-affecting settings (lakd.config.diff) with `settings.json`, which the first
attempt wrote: unchanged, or a new directory, the run goes on (a resume, or "already trained"); changed, it
does what `on_config_change` says:

* refuse (default): `ConfigChanged` listing each `key: old -> new`, nothing touched;
* restart: the run's checkpoints and logs (best/, last/, summary.json, metrics.jsonl, done.json, its W&B run
  id) are deleted and it starts from step 0 (a new W&B run);
* resume: it continues from its checkpoint (a finished one stays finished); settings.json records the change.

Only the main process (rank 0 before or after the process group exists) locks and writes; every rank reads
settings.json and so reaches the same decision. No torch here: `lakd launch` imports it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lakd.config.diff import changed_error, settings_changes
from lakd.io import atomic_write_json
from lakd.run_lock import RunDirBusy, lock_run_dir

log = logging.getLogger("lakd.train.run_dir")

SETTINGS_FILE = "settings.json"
# what a run writes into its directory, removed by a restart (the lock file stays: it is held right now);
# wandb_run_id too (lakd.train.logging.WANDB_ID_FILE), so that a run started afresh is a new W&B run
RUN_FILES = ("best", "last", "summary.json", "metrics.jsonl", "done.json", "wandb_run_id", SETTINGS_FILE)


def env_is_main() -> bool:
    """Rank 0 as the launcher announced it (torchrun's RANK, srun's SLURM_PROCID), before any process group;
    RANK/WORLD_SIZE inherited from another lakd process do not count (lakd.train.distributed.announced_rank)."""
    from lakd.train.distributed import announced_rank

    return announced_rank() == 0


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_settings(directory: str | os.PathLike) -> dict | None:
    path = Path(directory) / SETTINGS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise RuntimeError(f"{path}: not valid JSON ({e}); delete it to accept the current settings") from e


def remove_leftovers(directory: str | os.PathLike) -> list[str]:
    """Delete hidden temporary files and staging directories (`.*.tmp`, `.*.staging`) of writes that were
    killed. Call it only while holding the run lock: then no other process is writing them."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".staging")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def start_afresh(directory: str | os.PathLike) -> None:
    """Delete what a run wrote into `directory` (RUN_FILES, their swap backups and leftovers)."""
    directory = Path(directory)
    for name in RUN_FILES:
        for p in (directory / name, directory / f".{name}.old"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    remove_leftovers(directory)


def apply_settings(directory: str | os.PathLike, settings: dict[str, Any], on_change: str, main: bool = True) -> str:
    """Compare `settings` with those recorded in `directory` and act on a change (see the module docstring).
    Returns "new", "same", "restart" or "resume"; raises ConfigChanged on refuse."""
    directory = Path(directory)
    recorded = read_settings(directory)
    settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if recorded is None:
        if main:
            if (directory / "last").exists() or (directory / "best").exists():
                log.warning(
                    "%s has no %s (written by an older lakd): its settings cannot be compared", directory, SETTINGS_FILE
                )
            atomic_write_json(directory / SETTINGS_FILE, {"settings": settings, "recorded_at": _now(), "history": []})
        return "new"
    changes = settings_changes(recorded.get("settings", {}), settings)
    if not changes:
        return "same"
    if on_change == "restart":
        if main:
            log.warning("%s: settings changed (%s); starting it afresh", directory, "; ".join(changes))
            start_afresh(directory)
            history = [*recorded.get("history", []), {"at": _now(), "action": "restart", "changes": changes}]
            atomic_write_json(
                directory / SETTINGS_FILE, {"settings": settings, "recorded_at": _now(), "history": history}
            )
        return "restart"
    if on_change == "resume":
        if main:
            log.warning("%s: settings changed (%s); continuing it as asked", directory, "; ".join(changes))
            history = [*recorded.get("history", []), {"at": _now(), "action": "resume", "changes": changes}]
            atomic_write_json(directory / SETTINGS_FILE, {**recorded, "settings": settings, "history": history})
        return "resume"
    raise changed_error(str(directory), changes)


@contextlib.contextmanager
def claim_run_dir(
    directory: str | os.PathLike, settings: dict[str, Any], on_change: str = "refuse", is_main: bool | None = None
) -> Iterator[str]:
    """Lock `directory` (main process) and settle its settings; yields what `apply_settings` decided."""
    main = env_is_main() if is_main is None else is_main
    with lock_run_dir(directory) if main else contextlib.nullcontext():
        yield apply_settings(directory, settings, on_change, main)


@contextlib.contextmanager
def hold_for_training(directory: str | os.PathLike, is_main: bool, broadcast=None) -> Iterator[None]:
    """The trainer's hold on its out_dir: rank 0 takes the run lock and clears leftovers of killed writes;
    `broadcast` (rank 0's object to every rank) makes every rank raise RunDirBusy together when it is taken."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if is_main:
            try:
                stack.enter_context(lock_run_dir(directory))
            except RunDirBusy as e:
                refusal = str(e)
            else:
                remove_leftovers(directory)
        if broadcast is not None:
            refusal = broadcast(refusal)
        if refusal is not None:
            raise RunDirBusy(refusal)
        yield
