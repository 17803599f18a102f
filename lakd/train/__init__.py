"""Training: one loop for all models (engine), DeepSpeed path, distributed init, checkpoints, run logging.

Heavy modules (DeepSpeed, W&B) are imported only when used.
"""

from lakd.train.distributed import DistInfo, init_distributed
from lakd.train.engine import Preempted, Trainer

__all__ = ["DistInfo", "Preempted", "Trainer", "init_distributed"]
