"""The process's runtime, set up once by every recipe: device, torch threads and seeds.

    dist = setup_runtime(cfg)        # DistInfo: rank, world size, and the device everything runs on
    model.to(dist.device)

Before this module each recipe resolved these itself, and training and caching ignored `cfg.device`
(`device: cpu` still trained on a GPU) while evaluation honoured it. Now `cfg.device` is resolved in one
place, `lakd.train.distributed.resolve_device` (auto -> CUDA when torch sees a GPU; on CUDA each process
takes the GPU of its local rank), and every recipe gets it from here.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from lakd.config import Config
from lakd.train.distributed import DistInfo, init_distributed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch's seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_runtime(cfg: Config) -> DistInfo:
    """Apply `cfg.threads`, initialise the distributed environment on `cfg.device`, seed with `cfg.seed`.

    Idempotent (a recipe that calls another recipe sets up the same runtime again); it reseeds, so call
    it before building anything random. The returned `DistInfo.device` is the device to use.
    """
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dist = init_distributed(device=cfg.device)
    seed_everything(cfg.seed)
    return dist
