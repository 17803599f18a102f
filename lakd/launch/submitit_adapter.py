"""The two private submitit calls lakd relies on, isolated here.

Why private calls at all: submitit (checked on submitit 1.5.4) has no public API for either of them.

* `checkpoint_signal(env)` wraps `JobEnvironment._usr_sig()`: the signal submitit's own handler checkpoints
  and requeues on (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise). The job task re-routes it to the
  training loop's SIGUSR1 handler, so the loop writes its checkpoint at the next step before the job goes.
* `requeue(env, countdown)` wraps `JobEnvironment._requeue(countdown)`: requeue the running job from inside
  it (`scontrol requeue <job id>` on SLURM, a restart with the local executor), which the job task calls after
  the training loop stopped on that signal and raised Preempted.

If a submitit upgrade renames or changes them, this module is the one place to adapt; tests/test_launch_graph.py
(local executor) and tests/test_slurm_cluster.py exercise both calls end to end.
"""

from __future__ import annotations

import signal
from typing import Any

CHECKED_SUBMITIT_VERSION = "1.5.4"


def _private(env: Any, name: str):
    method = getattr(env, name, None)
    if method is None:
        import submitit

        raise RuntimeError(
            f"submitit {submitit.__version__} has no JobEnvironment.{name}, which lakd uses "
            f"(checked on submitit {CHECKED_SUBMITIT_VERSION}); adapt lakd/launch/submitit_adapter.py"
        )
    return method


def checkpoint_signal(env: Any) -> signal.Signals:
    """The signal on which submitit checkpoints and requeues this job."""
    return signal.Signals(_private(env, "_usr_sig")())


def requeue(env: Any, countdown: int) -> None:
    """Requeue the running job; `countdown` is how many more requeues submitit may do after this one."""
    _private(env, "_requeue")(countdown)
