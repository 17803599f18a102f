"""A training run's checkpoint files: `best/` and `last/` (written by `RunCheckpoints`), RNG state capture.

A run directory holds

    best/                    the selected model (model.save_pretrained + lakd.json with extra_meta, dev metrics)
    last/                    the latest model + trainer_state.pt (+ deepspeed/ under DeepSpeed): resume point
    metrics.jsonl, summary.json

Directories are written to a hidden staging directory and swapped in with two renames by
`lakd.io.replace_dir` (`last` -> `.last.old`, staging -> `last`); a crash between the renames leaves
`.last.old`, which `resolve_dir` returns, so a reader always finds one complete checkpoint. The last file
written into the staging directory is `checksums.json` (lakd.checksums: sha256 of every file, DeepSpeed's
too); `load_trainer_state` and `SERModel.from_pretrained` verify it. A write that fails (a full disk: an
OSError naming the file) removes its staging directory.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakd.checksums import ChecksumError, verify_checksums, write_checksums
from lakd.io import atomic_write, replace_dir, resolve_dir
from lakd.train import distributed as D

TRAINER_STATE = "trainer_state.pt"
STATE_VERSION = 1
BEST_DIR = "best"
LAST_DIR = "last"
EXTRA_MODULES_FILE = "extra_modules.pt"  # the trainer's extra modules (e.g. embedding projections), beside the model


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same directory, fsync, then os.replace."""
    atomic_write(path, lambda f: torch.save(obj, f))


def staging_dir(final: str | os.PathLike) -> Path:
    """The hidden staging path beside `final` (same file system, so the swap is a rename), cleared of any
    leftover from an interrupted save and NOT created: `save_pretrained` implementations may insist on
    creating (or replacing) their target directory themselves."""
    final = Path(final)
    stage = final.with_name(f".{final.name}.staging")
    if stage.exists():
        shutil.rmtree(stage)
    stage.parent.mkdir(parents=True, exist_ok=True)
    return stage


def save_model_dir(model: torch.nn.Module, directory: str | os.PathLike, meta: dict) -> None:
    """`model.save_pretrained(dir, extra_meta=meta)`; plain modules get `model.pt` (state dict) instead.
    Call it first on a staging directory: save_pretrained may replace the whole directory."""
    directory = Path(directory)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory, extra_meta=meta)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        atomic_torch_save({"state_dict": model.state_dict(), "meta": meta}, directory / "model.pt")


# ------------------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class rng_isolated:
    """Context manager: whatever runs inside (evaluation) leaves the training RNG streams untouched."""

    def __enter__(self):
        self._state = capture_rng()
        return self

    def __exit__(self, *exc) -> None:
        restore_rng(self._state)


def load_trainer_state(directory: str | os.PathLike) -> dict | None:
    """The trainer state in `directory` (or its interrupted-swap leftover); None if there is none."""
    d = resolve_dir(directory)
    if d is None or not (d / TRAINER_STATE).exists():
        return None
    path = d / TRAINER_STATE
    try:
        verify_checksums(d)
    except ChecksumError as e:
        raise ChecksumError(f"{e} (the resume point of this run; delete {d} to start over)") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn file cannot happen with atomic writes, but a foreign one can
        raise RuntimeError(f"{path}: cannot read the training state ({e}); delete it to start over") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise RuntimeError(f"{path}: not a lakd training state of version {STATE_VERSION}")
    state["_dir"] = str(d)
    return state


class RunCheckpoints:
    """`best/` and `last/` of one run under `out_dir`. Both writes are collective (call them on every rank):
    rank 0 writes the files, DeepSpeed's backend writes every rank's partition into `last/`."""

    def __init__(
        self,
        out_dir: Path,
        dist: D.DistInfo,
        model: torch.nn.Module,
        extra_modules: dict[str, torch.nn.Module],
        backend: Any,
    ):
        self.out_dir, self.dist, self.model, self.extra_modules, self.backend = (
            out_dir,
            dist,
            model,
            extra_modules,
            backend,
        )

    def _save_extra_modules(self, directory: Path) -> None:
        if self.extra_modules:
            state = {k: m.state_dict() for k, m in self.extra_modules.items()}
            atomic_torch_save(state, directory / EXTRA_MODULES_FILE)

    def save_last(self, meta: dict, trainer_state: dict) -> Path:
        """The model, the backend's files and `trainer_state` plus every rank's RNG state, swapped into `last/`."""
        final = self.out_dir / LAST_DIR
        rng_by_rank = D.all_gather_object(capture_rng())
        stage = final.with_name(f".{final.name}.staging")
        try:
            if self.dist.is_main:  # the model first: save_pretrained may (re)create the directory
                staging_dir(final)
                save_model_dir(self.model, stage, meta)
            D.barrier()
            self.backend.save(stage)  # DeepSpeed: every rank writes its partition
            D.barrier()
            if self.dist.is_main:
                self._save_extra_modules(stage)
                state = {"version": STATE_VERSION, **trainer_state, "rng": rng_by_rank}
                atomic_torch_save(state, stage / TRAINER_STATE)
                write_checksums(stage)
                replace_dir(stage, final)
        except BaseException:
            if self.dist.is_main:
                shutil.rmtree(stage, ignore_errors=True)
            raise
        D.barrier()
        return final

    def save_best(self, meta: dict) -> None:
        """The model (and extra modules) swapped into `best/`."""
        if self.dist.is_main:
            final = self.out_dir / BEST_DIR
            stage = staging_dir(final)
            try:
                save_model_dir(self.model, stage, meta)
                self._save_extra_modules(stage)
                write_checksums(stage)
                replace_dir(stage, final)
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
        D.barrier()

    def load_last(self, run_shape: dict) -> tuple[dict | None, list[str]]:
        """The trainer state of `last/` (its directory under "_dir"; None when there is none) with the backend
        restored from it, and warnings about what changed since (`run_shape`: what the trainer saves beside its
        progress). A checkpoint that cannot be resumed this way is an error."""
        state = load_trainer_state(self.out_dir / LAST_DIR)
        if state is None:
            return None, []
        where = state["_dir"]
        if bool(state["deepspeed"]) != run_shape["deepspeed"]:
            raise RuntimeError(
                f"{where}: checkpoint was written {'with' if state['deepspeed'] else 'without'} "
                "DeepSpeed; resume it the same way (launch.deepspeed) or use another out_dir"
            )
        warnings = []
        if any(state[k] != run_shape[k] for k in ("grad_accum", "batches_per_epoch")):
            warnings.append(
                "grad_accum or batches per epoch changed since the checkpoint; the position inside the epoch is "
                "approximate"
            )
        if state["world_size"] != run_shape["world_size"]:
            warnings.append(
                f"world size changed ({state['world_size']} -> {run_shape['world_size']}); "
                "RNG streams restart from the seed"
            )
        if run_shape["deepspeed"]:
            self.backend.load(Path(where))
        else:
            self.backend.load_state_dict(state["backend"])
        return state, warnings
