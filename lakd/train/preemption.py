"""Stopping on a scheduler's signal: the flag the training loop polls, the exception it raises once its
checkpoint is written, and the exit code that means "requeue me".

SLURM (directly, or through submitit's checkpoint signal, see lakd.launch.submitit_adapter) sends SIGUSR1 or
SIGTERM before a time limit or a preemption. The handler only records the signal; the loop checks it at the
next step boundary, writes `last/` and raises `Preempted`. The launcher (lakd.launch) recognises that class
and requeues the job; a command-line entry point should `sys.exit(EXIT_PREEMPTED)`.

Nothing here imports torch, so the launcher can import it cheaply.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL in sysexits.h: "temporary failure, try again later"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(RuntimeError):
    """Training stopped on SIGUSR1/SIGTERM after writing a resumable checkpoint; requeue the job."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, step: int, checkpoint: str, signal_name: str):
        super().__init__(f"preempted by {signal_name} at step {step}; resumable checkpoint in {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name


class StopSignalFlag:
    """While installed (a context manager), SIGUSR1/SIGTERM only record their name in `.received`.

    Installed only in the main thread (Python delivers signals there; elsewhere `signal.signal` raises) and
    when `enabled`; the previous handlers come back on exit.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.received: str | None = None
        self._previous: dict = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignalFlag:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._record) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
