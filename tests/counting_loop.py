"""A stand-in training loop shared by the job-graph tests (local executor) and the SLURM tests.

It stops the way lakd's engine does: SIGUSR1 sets a flag, and at the next step the loop saves its progress and
raises the engine's real `Preempted` (so the launcher's recognition of it is tested against the real class).
Otherwise progress is saved only every `save_every` steps, so a resume that loses or repeats steps shows in the
`steps` file. Not a test module: test files import it (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import cloudpickle

from lakd.train import Preempted

# jobs unpickle the loop in another process, where tests/ is not importable: ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def counting_training_loop(cfg, language, steps: int = 30, save_every: int = 10, step_s: float = 0.1) -> str:
    """Count `steps` steps of `step_s` seconds under `{cfg.run_dir}/counter` (files: starts, steps, progress)."""
    d = Path(cfg.run_dir) / "counter"
    d.mkdir(parents=True, exist_ok=True)
    flag = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: flag.append(signum))
    try:
        step = int((d / "progress").read_text()) if (d / "progress").exists() else 0
        with open(d / "starts", "a") as f:
            f.write(f"{step}\n")
        while step < steps:
            if flag:
                (d / "progress").write_text(str(step))
                raise Preempted(step, str(d), "SIGUSR1")
            time.sleep(step_s)
            step += 1
            with open(d / "steps", "a") as f:
                f.write(f"{step}\n")
            if step % save_every == 0:
                (d / "progress").write_text(str(step))
        return f"counted {step}"
    finally:
        signal.signal(signal.SIGUSR1, previous)
