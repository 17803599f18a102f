"""The teacher-cache tests' shared pieces: real tiny shards, real tiny teachers, the writer as the tests call it,
and the manifest check (the `cached` fixture, a cache written from both, is in conftest.py). Not a test module."""

import json

import numpy as np
import torch

from lakd.config import DataConfig, ModelConfig
from lakd.data.shards import ShardWriter
from lakd.distill.cache import TeacherCache
from lakd.distill.cache_write import write_teacher_cache
from lakd.models.ser import SERModel

LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en", "fi", "fr"]
DATA = DataConfig(max_seconds=1.0, eval_batch_size=4, num_workers=0, bucket=True)


def make_shards(directory, n=12, per_shard=6):
    rng = np.random.default_rng(0)
    with ShardWriter(directory, "train", max_count=per_shard) as w:
        for i in range(n):
            audio = 0.1 * rng.standard_normal(int(16000 * rng.uniform(0.3, 0.8))).astype(np.float32)
            meta = {
                "emotion": LABELS[i % 4],
                "language": LANGS[i % 3],
                "speaker": f"s{i % 4}",
                "corpus": "t",
                "split": "train",
            }
            w.write(f"utt{i:03d}", meta, audio)
    return directory


def save_teacher(path, hidden=32, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone={"hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    )
    SERModel(cfg, LABELS, LANGS).save_pretrained(path, extra_meta={"kind": "ft-mono"})
    return str(path)


def write(shards, teachers, out, **kw):
    return write_teacher_cache(
        teachers, str(shards), out, LABELS, LANGS, DATA, "cpu", batch_size=4, samples_per_shard=5, **kw
    )


def assert_manifest_true(out):
    """Every teacher the manifest lists is complete and on disk with the recorded checksums."""
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["teachers"].values():
        assert entry["complete"]
        for shard in entry["shards"]:
            assert (out / shard["path"]).exists(), f"manifest lists {shard['path']}, which is not on disk"
    TeacherCache(out).verify()  # loads every listed teacher, checks every sha256
    return manifest
