"""How far a training run is, for people watching it: step / total, epoch, loss, samples/s and an ETA.

On a terminal a rich progress bar (lines such as dev evaluations print above it); when output goes to a file
(SLURM and local-executor job logs) the training lines that `RunLogger` prints anyway carry the same facts as
text, e.g. ``step 40/120 (33%)  epoch 1.33  loss 1.234  45.2 samples/s  ETA 0:02:10``. The ETA is wall-clock
based (evaluations and checkpoints included), from the steps taken since this process started or resumed.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


class ProgressDisplay:
    """Fed by `update(step, values)` with the logged training values (``train/loss``, ``train/epoch``, ...)."""

    def __init__(self, total_steps: int, start_step: int = 0, console=None, live: bool | None = None):
        self.total = max(1, int(total_steps))
        self.start_step = int(start_step)
        self.started = time.monotonic()
        self.console = console
        self.live = bool(console is not None and console.is_terminal) if live is None else live
        self._bar = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[facts]}"),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task("train", total=self.total, completed=self.start_step, facts="")
            self._bar.start()

    def eta_seconds(self, step: int, now: float | None = None) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        elapsed = (now if now is not None else time.monotonic()) - self.started
        return elapsed / done * max(0, self.total - step)

    def describe(self, step: int, values: Mapping[str, Any]) -> str:
        """``step 40/120 (33%)  epoch 1.33  loss 1.234  45.2 samples/s  ETA 0:02:10`` (missing values left out)."""
        parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"]
        if isinstance(values.get("train/epoch"), (int, float)):
            parts.append(f"epoch {values['train/epoch']:.2f}")
        if isinstance(values.get("train/loss"), (int, float)):
            parts.append(f"loss {values['train/loss']:.4g}")
        if isinstance(values.get("train/samples_per_s"), (int, float)):
            parts.append(f"{values['train/samples_per_s']:.1f} samples/s")
        eta = self.eta_seconds(step)
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA –")
        return "  ".join(parts)

    def update(self, step: int, values: Mapping[str, Any]) -> str:
        """Advance the bar (on a terminal); returns the text line for plain output."""
        text = self.describe(step, values)
        if self._bar is not None:
            facts = text.split("  ", 1)[1] if "  " in text else ""
            self._bar.update(self._task, completed=step, facts=facts)
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
