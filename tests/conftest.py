"""Shared test setup: one torch thread (the CI machine has 2 cores), offline W&B, tiny fixtures."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EMOSYNTH3 = SHARED / "corpora" / "emosynth3"


@pytest.fixture(scope="session")
def emosynth3() -> Path:
    """The public EmoSynth-3 corpus beside the project (../shared); tests that need it skip with a reason if absent."""
    if not (EMOSYNTH3 / "train" / "index.json").exists():
        pytest.skip("../shared/corpora/emosynth3 is not present beside the checkout")
    return EMOSYNTH3


@pytest.fixture
def cached(tmp_path):
    """A teacher cache written by the real writer from two real tiny teachers over real tiny shards."""
    from cache_fixtures import make_shards, save_teacher, write

    shards = make_shards(tmp_path / "data")
    teachers = {"en": save_teacher(tmp_path / "t_en", 32, 0), "fi": save_teacher(tmp_path / "t_fi", 24, 1)}
    out = tmp_path / "cache"
    write(shards, teachers, out)
    return shards, teachers, out
