"""What `lakd launch` / `lakd demo` show while the job graph runs: each unit's start, end or failure, and every
`every_s` seconds the running units' last logged metric (step, epoch, loss, dev UA), read from the same
markers and metrics.jsonl files `lakd status` reads, so the terminal is not silent while job logs go to files.

A daemon thread polls; any error while reading (a half-written file) is skipped until the next poll.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape


class StageWatcher:
    """Context manager: prints stage progress lines for `run_dir` while the body runs."""

    def __init__(self, run_dir: str | Path, console: Console, poll_s: float = 2.0, every_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.console = console
        self.poll_s = poll_s
        self.every_s = every_s
        self._states: dict[str, str] = {}
        self._last_progress: dict[str, float] = {}
        self._last_text: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lakd-stage-watcher", daemon=True)

    def __enter__(self) -> StageWatcher:
        self._initial = self._snapshot()  # units already done before this launch are not announced
        self._states = {k: v for k, (v, _) in self._initial.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # the last transitions (e.g. the evaluation finishing)

    def _snapshot(self) -> dict[str, tuple[str, str]]:
        from lakd.launch.status import stage_status

        try:
            rows = stage_status(self.run_dir, live=False)
        except Exception:  # no stages/ yet, or a file being written: try again at the next poll
            return {}
        return {
            r["stage"] + (f"[{r['item']}]" if r["item"] else ""): (r["state"], r.get("metric_text") or "") for r in rows
        }

    def poll(self) -> None:
        now = time.monotonic()
        for unit, (state, text) in self._snapshot().items():
            if state != self._states.get(unit):
                self._states[unit] = state
                if state in ("running", "done", "failed"):
                    style = {"running": "cyan", "done": "green", "failed": "bold red"}[state]
                    shown = f"  {text}" if text and state != "running" else ""
                    self.console.print(f"[{style}]{escape(unit)}: {state}[/{style}]{escape(shown)}", highlight=False)
                    self._last_progress[unit] = now
            elif state == "running" and text and text != self._last_text.get(unit):
                if now - self._last_progress.get(unit, 0.0) >= self.every_s:
                    self.console.print(f"{unit}: {text}", markup=False, highlight=False)
                    self._last_progress[unit] = now
                    self._last_text[unit] = text

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # never let the display break the launch
                continue
