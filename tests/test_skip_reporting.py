"""Skip counts reach the run's records: batches carry them out of DataLoader worker processes, every epoch
logs its counts by reason (metrics.jsonl, the same dict W&B gets), summary.json has the run's totals, and a
resumed run counts exactly what an uninterrupted one does."""

import io
import json
import logging
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.config import DataConfig, OptimConfig
from lakd.data.loader import build_loader
from lakd.data.shards import encode_flac
from lakd.train.engine import Trainer
from lakd.train.logging import RunLogger, read_metrics

LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en"]
CFG = DataConfig(max_seconds=0.5, batch_size=4, eval_batch_size=4, shuffle_buffer=4, bucket=False, epoch_samples=40)
BAD_REASONS = {"out_of_range", "bad_metadata", "undecodable_audio"}


def _meta(i):
    return json.dumps({"emotion": LABELS[i % 4], "language": "en", "speaker": "s", "corpus": "c", "split": "x"})


def _tone(i, n=4000):
    return (0.2 * np.sin(np.arange(n) * 2 * np.pi * (150 + 40 * (i % 4)) / 16_000)).astype(np.float32)


def _wav(x):
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.fixture
def data(tmp_path):
    """Two shards of 8 good samples and three bad ones (one per reason) each; no index.json (`lakd shards index`
    refuses the deep JSON), so the loader scans the shards for their languages."""
    for s in range(2):
        members = []
        for i in range(8):
            members += [(f"s{s}g{i}.flac", encode_flac(_tone(i), 16_000)), (f"s{s}g{i}.json", _meta(i).encode())]
        loud = _tone(0) * 1e31
        members += [(f"s{s}loud.wav", _wav(loud)), (f"s{s}loud.json", _meta(0).encode())]
        members += [(f"s{s}deep.flac", encode_flac(_tone(1), 16_000)), (f"s{s}deep.json", b"[" * 50_000)]
        members += [(f"s{s}noise.flac", b"\x00garbage" * 40), (f"s{s}noise.json", _meta(2).encode())]
        with tarfile.open(tmp_path / f"en-{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, payload in members:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return tmp_path


def test_batches_carry_worker_skips_so_a_consumer_that_stops_early_has_them(data):
    loader = build_loader(data, LABELS, LANGS, cfg=replace(CFG, num_workers=2), train=True)
    carried: dict = {}
    it = iter(loader)
    for _ in range(len(loader)):  # exactly the epoch's batches, as the trainer takes them: no WorkerReport read
        for reason, n in next(it)["skipped"].items():
            carried[reason] = carried.get(reason, 0) + n
    assert set(carried) == BAD_REASONS and all(n >= 1 for n in carried.values())
    del it


class MeanModel(nn.Module):
    """A real (tiny) classifier of the loader's batches: masked mean and energy of the audio -> 4 classes."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 4)

    def forward(self, input_values, attention_mask, language_ids=None):
        m = attention_mask.float()
        n = m.sum(1).clamp(min=1)
        feats = torch.stack([(input_values * m).sum(1) / n, (input_values.pow(2) * m).sum(1) / n], dim=1)
        return self.head(feats)


def _ce(model, batch):
    loss = F.cross_entropy(model(batch["input_values"], batch["attention_mask"]), batch["labels"])
    return loss, {}


def _train(data, out, epochs=3, crash_at=None, num_workers=0, max_steps=None):
    cfg = replace(CFG, num_workers=num_workers)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("node died")
        return _ce(model, batch)

    def factory(epoch):
        return build_loader(data, LABELS, LANGS, cfg=cfg, train=True, seed=0, epoch=epoch)

    torch.manual_seed(0)
    optim = OptimConfig(
        epochs=epochs, max_steps=max_steps, lr=1e-2, checkpoint_every=2, precision="fp32", warmup_ratio=0.0
    )
    with RunLogger(out, wandb_cfg=None, enabled_on_rank0=True, console=False) as logger:
        trainer = Trainer(
            MeanModel(),
            optim,
            loss_fn=loss_fn,
            train_loader_factory=factory,
            steps_per_epoch=len(factory(0)),
            out_dir=out,
            logger=logger,
        )
        return trainer.fit()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_epoch_logs_its_skips_and_the_summary_has_the_totals(data, tmp_path, num_workers, caplog, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    caplog.set_level(logging.INFO, logger="lakd.data")
    summary = _train(data, tmp_path / "run", num_workers=num_workers)
    records = read_metrics(tmp_path / "run")
    per_epoch = [r for r in records if "data/skipped" in r]
    ends = [r for r in records if r.get("event") == "epoch_end"]
    assert len(per_epoch) == len(ends) == 3 and [e["epoch"] for e in ends] == [0, 1, 2]
    for r, e in zip(per_epoch, ends):
        reasons = {k.split("/")[-1] for k in r if k.startswith("data/skipped/")}
        assert reasons == BAD_REASONS and r["data/skipped"] == sum(r[f"data/skipped/{x}"] for x in reasons)
        assert e["skipped"].startswith(f"{r['data/skipped']} skipped (") and "no samples skipped" not in e["skipped"]
    totals = {x: sum(r[f"data/skipped/{x}"] for r in per_epoch) for x in BAD_REASONS}
    assert summary["skipped"] == totals
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["skipped"] == totals
    assert [r for r in records if r.get("event") == "summary"][0]["skipped_total"] == sum(totals.values())
    assert "no samples skipped" not in caplog.text  # the loader's own epoch line agrees


def test_a_resumed_run_counts_what_an_uninterrupted_one_does(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    straight = _train(data, tmp_path / "a")
    with pytest.raises(RuntimeError, match="node died"):
        _train(data, tmp_path / "b", crash_at=15)  # in epoch 1, after the checkpoint at step 14
    resumed = _train(data, tmp_path / "b")
    assert resumed["skipped"] == straight["skipped"] and resumed["steps"] == straight["steps"]
    per_epoch = [r for r in read_metrics(tmp_path / "b") if "data/skipped" in r]
    assert [r["data/skipped"] for r in per_epoch] == [
        r["data/skipped"] for r in read_metrics(tmp_path / "a") if "data/skipped" in r
    ]


def test_an_epoch_cut_short_by_max_steps_reports_its_skips_too(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = _train(data, tmp_path / "run", max_steps=15)  # 10 batches per epoch: epoch 1 stops half-way
    records = read_metrics(tmp_path / "run")
    ends = [r for r in records if r.get("event") == "epoch_end"]
    assert [(e["epoch"], e["partial"]) for e in ends] == [(0, False), (1, True)]
    per_epoch = [r for r in records if "data/skipped" in r]
    assert len(per_epoch) == 2 and per_epoch[1]["data/skipped"] >= 1
    assert sum(summary["skipped"].values()) == sum(r["data/skipped"] for r in per_epoch)
