"""Training: one loop for all models (engine), DeepSpeed path, distributed init, checkpoints, run logging.

The names below are imported on first use (PEP 562), so `lakd.train.preemption`, which the launcher needs
to recognise `Preempted`, can be imported without torch; DeepSpeed and W&B are imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DistInfo": "lakd.train.distributed",
    "init_distributed": "lakd.train.distributed",
    "Trainer": "lakd.train.engine",
    "Preempted": "lakd.train.preemption",
    "EXIT_PREEMPTED": "lakd.train.preemption",
    "setup_runtime": "lakd.train.runtime",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lakd.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
