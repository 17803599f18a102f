"""W&B shows the results, not only the losses: a tiny teacher run and its test evaluation logged offline, then
read back from the offline `.wandb` files: job types, tags, the dev/test evaluation scalars (UA/WA overall and per
language, per-class recall), confusion-matrix images, the per-class table, the confusion chart's table, the best
checkpoint as an artifact, and the training-metric interval from the config.

wandb 0.31 has no Python reader for offline runs (its `sdk.internal.datastore` is gone; the Go core reads them),
so `tests/wandb_records.py` parses the documented LevelDB-log framing and decodes each record with wandb's own
protobuf (`wandb.proto.wandb_internal_pb2.Record`).
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import wandb_records

from lakd.config import load_config
from lakd.data.shards import ShardWriter

LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en", "fi", "fr"]

_FILE_HEADER_SIZE = 7  # ":W&B", magic 0xBEE1, version (tests/wandb_records.py reads the rest)


def read_wandb_file(path: Path) -> list:
    """Every record of an offline run's `run-<id>.wandb` file, as wandb protobuf `Record`s."""
    return list(wandb_records.records(path))


def offline_runs(root: Path) -> dict[str, dict]:
    """Every offline run under `root` (wherever the W&B directory is), keyed by job type."""
    runs = [offline_run(p) for p in sorted(root.rglob("offline-run-*/run-*.wandb"))]
    by_type = {r["run"].job_type: r for r in runs}
    assert len(by_type) == len(runs), [r["run"].job_type for r in runs]
    return by_type


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records of an offline run once its `exit` record is on disk. wandb-core writes the transaction log from
    its own process, so `run.finish()` can return before the file is complete: under load a reader right after it
    found a file without even its `run` record (test failed 2 of 6 times at load 8, passed once the file was read
    a few seconds later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_wandb_file(path) if path.stat().st_size >= _FILE_HEADER_SIZE else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def offline_run(path: Path) -> dict:
    """The run record, history rows (nested media values as dicts), summary and artifacts of one offline run."""
    out = {"run": None, "history": [], "summary": {}, "artifacts": [], "dir": path.parent}
    for rec in finished_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                value = json.loads(item.value_json)
                if item.key or len(item.nested_key) == 1:
                    row[item.key or item.nested_key[0]] = value
                else:
                    row.setdefault(item.nested_key[0], {})["/".join(item.nested_key[1:])] = value
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                if item.key or len(item.nested_key) == 1:
                    out["summary"][item.key or item.nested_key[0]] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
    return out


def _shards(root: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * 0.6)) / 16000
    for split, n in (("train", 24), ("dev", 12), ("test", 12)):
        with ShardWriter(root / split, split, max_count=50) as w:
            for i in range(n):
                audio = 0.2 * np.sin(2 * np.pi * (120 + 40 * (i % 4)) * t) + 0.02 * rng.standard_normal(t.size)
                meta = {"emotion": LABELS[i % 4], "language": LANGS[i % 3], "speaker": f"{split}{i % 6}"}
                w.write(f"{split}{i:03d}", {**meta, "corpus": "t", "split": split}, audio.astype(np.float32))


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    from lakd.recipes import evaluate, finetune

    root = tmp_path_factory.mktemp("wandb")
    _shards(root / "data")
    cfg = load_config(
        "tiny",
        [
            f"run_dir={root / 'run'}",
            *(f"data.{s}={root / 'data' / s}" for s in ("train", "dev", "test")),
            "synth={}",
            "data.batch_size=8",
            "teacher_optim.max_steps=4",
            "teacher_optim.eval_every=2",
            "wandb.mode=offline",
            "wandb.log_every=2",
            "wandb.log_checkpoint=true",
            "wandb.tags=[unit-test]",
            "data.augment.noise_prob=0.5",  # issue 14: a run's augmentations are in its W&B config
            "data.augment.noise_snr_db=10,20",
            "threads=1",
        ],
    )
    best = finetune.run_teacher(cfg, "en")
    evaluate.run(cfg, best, split="test", name="en")
    return root / "run"


def test_training_run_logs_dev_evaluations_confusion_images_and_the_best_checkpoint(logged_run):
    run = offline_runs(logged_run)["ft-mono"]
    assert set(run["run"].tags) >= {"unit-test", "ft-mono"}
    assert run["run"].run_group == "tiny"
    config = {c.key: json.loads(c.value_json) for c in run["run"].config.update}
    augment = config["data"]["augment"]
    assert augment["noise_prob"] == 0.5 and augment["noise_snr_db"] == [10.0, 20.0] and augment["speed_prob"] == 0
    train_steps = [r["trainer/step"] for r in run["history"] if "train/loss" in r]
    assert train_steps == [2, 4]  # wandb.log_every=2
    dev = [r for r in run["history"] if "dev/ua" in r]
    assert [r["trainer/step"] for r in dev] == [2, 4]
    assert all({"dev/wa", "dev/ua_en", "dev/wa_en", "dev/recall_anger", "dev/recall_anger_en"} <= set(r) for r in dev)
    images = [r for r in run["history"] if "dev/confusion/overall" in r]
    assert [r["trainer/step"] for r in images] == [2, 4]
    for r in images:
        assert r["dev/confusion/overall"]["_type"] == "image-file"
        png = run["dir"] / "files" / r["dev/confusion/overall"]["path"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("dev/per_class" in r for r in run["history"]) and any(
        "dev/confusion_matrix_table" in r for r in run["history"]
    )
    model = [a for a in run["artifacts"] if a.type == "model"]
    assert len(model) == 1 and set(model[0].aliases) >= {"best", "latest"}
    assert any(f.path.endswith("lakd_head.safetensors") for f in model[0].manifest.contents)


def test_evaluation_run_logs_test_metrics_per_language_and_confusion_images(logged_run):
    run = offline_runs(logged_run)["evaluate"]
    assert set(run["run"].tags) >= {"evaluate", "en", "test", "unit-test"}
    report = json.loads((logged_run / "eval" / "en" / "test" / "metrics.json").read_text())["metrics"]
    scalars = next(r for r in run["history"] if "test/ua" in r)
    assert scalars["test/ua"] == pytest.approx(report["overall"]["ua"])
    for lang in LANGS:  # the teacher is tested on every language of the test split
        assert scalars[f"test/ua_{lang}"] == pytest.approx(report["groups"][lang]["ua"])
        assert scalars[f"test/wa_{lang}"] == pytest.approx(report["groups"][lang]["wa"])
    for label in LABELS:
        assert scalars[f"test/recall_{label}"] == pytest.approx(report["overall"]["per_class_recall"][label])
    assert run["summary"]["test/ua"] == pytest.approx(report["overall"]["ua"])
    images = next(r for r in run["history"] if "test/confusion/overall" in r)
    for group in ["overall", *LANGS]:
        media = images[f"test/confusion/{group}"]
        assert media["_type"] == "image-file" and (run["dir"] / "files" / media["path"]).exists()
    table = next(r["test/per_class"] for r in run["history"] if "test/per_class" in r)
    rows = json.loads((run["dir"] / "files" / table["path"]).read_text())
    assert rows["columns"] == ["language", "class", "support", "recall", "precision", "f1"]
    assert len(rows["data"]) == (len(LANGS) + 1) * len(LABELS)
    assert any("test/confusion_matrix_table" in r for r in run["history"])


def test_a_logger_without_wandb_config_starts_no_run_whatever_the_environment(tmp_path, monkeypatch):
    """The trainer's default logger (no config) must not open W&B runs because WANDB_MODE is set for real runs."""
    from lakd.train.logging import RunLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    with RunLogger(tmp_path) as logger:
        assert logger.wandb_run is None
    assert not (tmp_path / "wandb").exists()
