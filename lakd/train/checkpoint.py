"""Checkpoint files: atomic writes, atomic directory swaps, RNG state capture.

A run directory holds

    best/                    the selected model (model.save_pretrained + lakd.json with extra_meta, dev metrics)
    last/                    the latest model + trainer_state.pt (+ deepspeed/ under DeepSpeed): resume point
    metrics.jsonl, summary.json

Directories are written to a hidden staging directory and swapped in with two renames by
`lakd.io.replace_dir` (`last` -> `.last.old`, staging -> `last`); a crash between the renames leaves
`.last.old`, which `resolve_dir` returns, so a reader always finds one complete checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakd.io import atomic_write, resolve_dir
from lakd.io import replace_dir as replace_dir  # the trainer swaps checkpoints in with ckpt.replace_dir

TRAINER_STATE = "trainer_state.pt"
STATE_VERSION = 1


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
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn file cannot happen with atomic writes, but a foreign one can
        raise RuntimeError(f"{path}: cannot read the training state ({e}); delete it to start over") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise RuntimeError(f"{path}: not a lakd training state of version {STATE_VERSION}")
    state["_dir"] = str(d)
    return state
