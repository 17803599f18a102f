"""A tiny real run for CLI-level fault tests: random-audio shards (train/dev/test) and a YAML config with
a two-layer backbone, so that `lakd train teacher` / `lakd distill` train for real in seconds on a CPU.
Not a test module: test files import it (pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from lakd.data.shards import ShardWriter

LABELS = ["anger", "happiness", "neutral", "sadness"]
BACKBONE = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [16, 16],
    "conv_stride": [10, 8],
    "conv_kernel": [10, 8],
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 2,
}


def make_split(directory: Path, split: str, languages: list[str], n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with ShardWriter(directory, split, max_count=n) as w:
        for i in range(n):
            audio = 0.1 * rng.standard_normal(int(16000 * rng.uniform(0.2, 0.4))).astype(np.float32)
            label = LABELS[i % len(LABELS)]
            audio *= 1 + LABELS.index(label)  # louder per class: something to learn
            meta = {"emotion": label, "language": languages[i % len(languages)], "speaker": f"s{i % 3}"}
            w.write(f"{split}{i:04d}", {**meta, "corpus": "t", "split": split}, audio)
    return directory


def tiny_run(root: Path, languages: list[str] | None = None, n_train: int = 16, **optim) -> Path:
    """Shards under root/data and a config root/config.yaml whose run_dir is root/run; returns the config path."""
    languages = languages or ["en"]
    data = {s: str(make_split(root / "data" / s, s, languages, n, i)) for i, (s, n) in
            enumerate((("train", n_train), ("dev", 8), ("test", 8)))}  # fmt: skip
    model = {"family": "wav2vec2", "backbone": BACKBONE, "freeze_feature_encoder": False, "attention_dim": 8}
    opt = {"epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "checkpoint_every": 1, "precision": "fp32", **optim}
    cfg = {
        "name": "faults",
        "run_dir": str(root / "run"),
        "device": "cpu",
        "threads": 1,
        "labels": LABELS,
        "languages": languages,
        "data": {**data, "max_seconds": 0.5, "batch_size": 4, "eval_batch_size": 8, "shuffle_buffer": 8,
                 "bucket_buffer": 8},
        "teacher": model,
        "teacher_optim": opt,
        "student": {**model, "language_embedding": True, "hierarchical_attention": True, "attention_depth": 1},
        "student_optim": opt,
        "distill": {"use_cache": False},
        "wandb": {"mode": "disabled", "log_every": 1},
    }  # fmt: skip
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
