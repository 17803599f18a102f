"""The runtime set-up every recipe shares: `cfg.device` is honoured by training and caching (it used to be
ignored: `device: cpu` still trained on a GPU), threads and seeds come from the config.

On a machine without a GPU, torch is made to *report* one it cannot use: anything that ignored `device: cpu`
would then pick CUDA and fail. On a GPU machine the real GPU plays that part.
"""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lakd.config import load_config
from lakd.train.distributed import resolve_device
from lakd.train.runtime import setup_runtime


@pytest.fixture
def restore_environ():
    """setup_runtime exports RANK, WORLD_SIZE, MASTER_* like a launcher would: keep them out of other tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def gpu_reported(monkeypatch, restore_environ):
    """Without a GPU, torch tells lakd's own code that it has one (torch's internals, e.g. AdamW's step, keep
    the true answer: they would try to initialise CUDA)."""
    if torch.cuda.is_available():
        return
    really_available = torch.cuda.is_available

    def is_available() -> bool:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return caller.startswith("lakd.") or really_available()

    monkeypatch.setattr(torch.cuda, "is_available", is_available)


def tiny_cfg(tmp_path, emosynth3, **changes):
    """The tiny config on one English shard of EmoSynth-3, one optimizer step, W&B off."""
    overrides = {
        "run_dir": str(tmp_path / "run"),
        "data.train": [str(emosynth3 / "train" / "en-000000.tar")],
        "data.dev": [str(emosynth3 / "dev" / "en-000000.tar")],
        "data.max_seconds": 1.0,
        "data.batch_size": 4,
        "data.epoch_samples": 4,
        "teacher_optim.max_steps": 1,
        "threads": 1,
        "wandb.mode": "disabled",
        **changes,
    }
    return load_config("tiny", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_auto_picks_the_gpu_of_the_local_rank_and_explicit_devices_win(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_device_cpu_is_honoured_even_with_a_gpu_and_threads_and_seeds_are_set(tmp_path, gpu_reported):
    cfg = load_config("tiny", [f"run_dir={tmp_path}", "device=cpu", "threads=1", "seed=7"])
    dist = setup_runtime(cfg)
    assert dist.device == torch.device("cpu")
    assert torch.get_num_threads() == 1
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    setup_runtime(cfg)  # idempotent: the same device, reseeded
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == drawn


def test_training_and_caching_run_on_the_configured_device(tmp_path, emosynth3, gpu_reported):
    from lakd.distill.cache import TeacherCache
    from lakd.recipes import cache as cache_recipe
    from lakd.recipes.finetune import train_classifier

    cfg = tiny_cfg(tmp_path, emosynth3, device="cpu")
    seen: dict = {}

    def loss_factory(model, device, dist):
        seen["device"], seen["params"] = device, {p.device for p in model.parameters()}

        def loss_fn(m, batch):
            logits = m(batch["input_values"], batch["attention_mask"], batch["language_ids"]).logits
            seen.setdefault("batch_devices", set()).add(batch["input_values"].device)
            return F.cross_entropy(logits, batch["labels"]), {}

        return loss_fn

    best = train_classifier(
        cfg, cfg.teacher, cfg.teacher_optim, ["en"], tmp_path / "teacher", kind="ft-mono", loss_factory=loss_factory
    )
    cpu = torch.device("cpu")
    assert seen["device"] == cpu and seen["params"] == {cpu} and seen["batch_devices"] == {cpu}
    assert json.loads((tmp_path / "teacher" / "summary.json").read_text())["steps"] == 1

    cache_dir = cache_recipe.run(cfg, {"en": str(best)})
    cache = TeacherCache(cache_dir, teacher_dirs={"en": str(best)})
    index = json.loads((emosynth3 / "train" / "index.json").read_text())
    n_shard = next(s["num_samples"] for s in index["shards"] if s["path"] == "en-000000.tar")
    assert len(cache) == n_shard  # every sample of the one training shard, computed on the CPU
