"""The training engine on a tiny model with in-memory batches: learning, files, exact resume after a crash
or a preemption signal, early stopping, grad accumulation, non-finite steps, extra modules; and with the real
loader and SERModel. DDP and DeepSpeed (subprocesses): test_engine_parallel.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny_training import (
    TinySER,
    ce_loss,
    dev_eval_fn,
    make_batches,
    make_trainer,
    optim,
    params_of,
)

from lakd.train.checkpoint import load_trainer_state
from lakd.train.engine import Trainer
from lakd.train.logging import read_metrics
from lakd.train.optim import lr_lambda
from lakd.train.preemption import EXIT_PREEMPTED, Preempted

# ---------------------------------------------------------------------------------------------- tests


def test_lr_schedule_warmup_then_cosine_and_linear():
    f = lr_lambda(total_steps=10, warmup_steps=2, schedule="cosine")
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    g = lr_lambda(total_steps=10, warmup_steps=0, schedule="linear")
    assert g(0) == 1.0 and g(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cosine, linear, constant"):
        lr_lambda(10, 1, "step")


def test_training_learns_selects_on_dev_and_writes_files(tmp_path):
    t = make_trainer(tmp_path, optim(epochs=4), eval_fn=dev_eval_fn())
    first_loss = None
    summary = t.fit()
    records = read_metrics(tmp_path)
    train = [r for r in records if "train/loss" in r]
    first_loss, last_loss = train[0]["train/loss"], train[-1]["train/loss"]
    assert last_loss < 0.7 * first_loss
    for key in ("train/ce", "train/pooled_norm", "train/lr", "train/grad_norm", "train/samples_per_s"):
        assert key in train[-1]
    dev = [r for r in records if "dev/ua" in r]
    assert len(dev) == 4  # end of every epoch
    assert summary["steps"] == 24 and summary["stop_reason"] == "epochs"
    assert summary["best_metric"] == max(r["dev/ua"] for r in dev) >= 0.6
    meta = json.loads((tmp_path / "best" / "lakd.json").read_text())
    assert meta["recipe"] == "unit-test" and meta["step"] == summary["best_step"]
    assert meta["dev"]["ua"] == summary["best_metric"]
    best = TinySER.from_pretrained(tmp_path / "best")
    assert dev_eval_fn()(best.eval())["ua"] == pytest.approx(summary["best_metric"])
    assert (tmp_path / "last" / "model.safetensors").exists()
    state = load_trainer_state(tmp_path / "last")
    assert state["finished"] and state["step"] == 24 and state["epoch"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["best_step"] == summary["best_step"]
    # a finished run is not trained again
    again = make_trainer(tmp_path, optim(epochs=4), eval_fn=dev_eval_fn()).fit()
    assert again["steps"] == 24 and read_metrics(tmp_path)[-1]["event"] == "already_finished"


def test_resume_after_crash_gives_identical_weights(tmp_path):
    cfg = optim(epochs=3, grad_accum=2, checkpoint_every=2, eval_every=4)
    # 6 batches / accum 2 = 3 steps per epoch; checkpoints at 2, 4, 6, 8 -> step 4 is mid-epoch 1
    straight = make_trainer(tmp_path / "a", cfg, eval_fn=dev_eval_fn())
    straight.fit()

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 5 + 1:  # first micro-batch of step 6, after the checkpoint at step 4
            raise RuntimeError("node died")
        return ce_loss(model, batch)

    with pytest.raises(RuntimeError, match="node died"):
        make_trainer(tmp_path / "b", cfg, loss_fn=crashing_loss, eval_fn=dev_eval_fn()).fit()
    state = load_trainer_state(tmp_path / "b" / "last")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 2)
    resumed = make_trainer(tmp_path / "b", cfg, eval_fn=dev_eval_fn(), seed=0)
    summary = resumed.fit()
    assert summary["steps"] == 9
    a, b = params_of(straight), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["best_step"] == straight.best_step and summary["best_metric"] == straight.best_metric
    events = [r.get("event") for r in read_metrics(tmp_path / "b")]
    assert "resume" in events


def test_preemption_signal_saves_raises_and_resumes_identically(tmp_path):
    cfg = optim(epochs=2, checkpoint_every=1000)
    straight = make_trainer(tmp_path / "a", cfg)
    straight.fit()

    calls = {"n": 0}

    def signalling_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # during step 5 (mid-epoch 0): like SLURM's --signal=USR1@90
            os.kill(os.getpid(), signal.SIGUSR1)
        return ce_loss(model, batch)

    previous = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Preempted) as info:
        make_trainer(tmp_path / "b", cfg, loss_fn=signalling_loss).fit()
    assert info.value.exit_code == EXIT_PREEMPTED == 75 and info.value.step == 5 and info.value.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == previous  # handler restored
    state = load_trainer_state(tmp_path / "b" / "last")
    assert state["step"] == 5 and state["batch_in_epoch"] == 5 and not state["finished"]
    resumed = make_trainer(tmp_path / "b", cfg)
    resumed.fit()
    a, b = params_of(straight), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_on_dev_metric(tmp_path):
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.9])

    def eval_fn(model):
        v = next(scores)
        return {"ua": v, "wa": 1 - v}

    t = make_trainer(tmp_path, optim(epochs=10, early_stopping_patience=3, eval_every=2), eval_fn=eval_fn)
    summary = t.fit()
    assert summary["stop_reason"] == "early_stopping"
    assert summary["best_metric"] == 0.6 and summary["best_step"] == 4 and summary["steps"] == 10
    assert json.loads((tmp_path / "best" / "lakd.json").read_text())["step"] == 4


def test_select_metric_wa(tmp_path):
    scores = iter([(0.9, 0.1), (0.1, 0.9)])

    def eval_fn(model):
        ua, wa = next(scores)
        return {"ua": ua, "wa": wa}

    summary = make_trainer(tmp_path, optim(epochs=2, select_metric="wa"), eval_fn=eval_fn).fit()
    assert summary["best_step"] == 12 and summary["best_metric"] == 0.9


def test_grad_accumulation_matches_big_batch(tmp_path):
    """Two micro-batches of 4 with grad_accum=2 == one batch of 8 (no dropout, mean losses)."""
    big = make_batches(0, n_batches=4, batch_size=8)
    small = []
    for b in big:
        for half in (slice(0, 4), slice(4, 8)):
            small.append({k: (v[half] if torch.is_tensor(v) else v[half]) for k, v in b.items()})
    results = []
    for batches, accum in ((big, 1), (small, 2)):
        torch.manual_seed(0)
        model = TinySER(dropout=0.0)
        t = Trainer(
            model,
            optim(epochs=1, grad_accum=accum),
            loss_fn=ce_loss,
            train_loader_factory=lambda e, bs=batches: bs,
            steps_per_epoch=len(batches),
            out_dir=tmp_path / f"ga{accum}",
        )
        assert t.fit()["steps"] == 4
        results.append(params_of(t))
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)


def test_nonfinite_loss_skips_the_step_and_continues(tmp_path):
    calls = {"n": 0}

    def sometimes_nan(model, batch):
        calls["n"] += 1
        loss, terms = ce_loss(model, batch)
        return (loss * float("nan") if calls["n"] == 3 else loss), terms

    t = make_trainer(tmp_path, optim(epochs=1), loss_fn=sometimes_nan)
    summary = t.fit()
    assert summary["nonfinite_skips"] == 1 and summary["steps"] == 6
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert any(r.get("event") == "nonfinite_gradients_skipped" for r in read_metrics(tmp_path))


def test_bf16_autocast_on_cpu_trains(tmp_path):
    t = make_trainer(tmp_path, optim(epochs=1, precision="bf16"))
    summary = t.fit()
    assert summary["precision"] == "bf16" and summary["steps"] == 6
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in t.model.parameters())


def test_bad_settings_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="smaller than grad_accum"):
        make_trainer(tmp_path, optim(grad_accum=8), n_batches=6)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        make_trainer(tmp_path, optim(precision="fp16"))
    with pytest.raises(ValueError, match="needs use_deepspeed"):
        make_trainer(tmp_path, optim(), zero_stage=2)
    with pytest.raises(KeyError, match="lacks optim.select_metric"):
        make_trainer(tmp_path / "x", optim(epochs=1), eval_fn=lambda m: {"accuracy": 1.0}).fit()


def test_extra_modules_are_trained_saved_and_resumed(tmp_path):
    """A loss-side module (a projection) is trained with the model, saved with `last/`, and restored on resume:
    a run that crashes after a checkpoint and resumes with a freshly initialised projection ends where an
    uninterrupted run ends, bit for bit."""

    def run(run_dir: Path, proj_seed: int, crash_at_batch: int | None = None):
        torch.manual_seed(proj_seed)
        proj = nn.Linear(16, 8)
        calls = {"n": 0}

        def loss_with_projection(model, batch):
            calls["n"] += 1
            if calls["n"] == crash_at_batch:
                raise RuntimeError("node died")
            out = model(batch["input_values"], batch["attention_mask"], batch["language_ids"])
            ce = F.cross_entropy(out.logits, batch["labels"])
            emb = 1 - F.cosine_similarity(proj(out.pooled), torch.ones(8)).mean()
            return ce + 0.1 * emb, {"ce": ce.detach(), "embed": emb.detach()}

        cfg = optim(epochs=2, checkpoint_every=4)
        return make_trainer(run_dir, cfg, loss_fn=loss_with_projection, extra_modules={"proj": proj}), proj

    straight, proj_a = run(tmp_path / "a", proj_seed=1)
    before = proj_a.weight.detach().clone()
    straight.fit()
    assert not torch.equal(before, proj_a.weight)  # trained
    saved = torch.load(tmp_path / "a" / "last" / "extra_modules.pt")
    assert torch.equal(saved["proj"]["weight"], proj_a.weight.detach())  # saved
    assert any("train/embed" in r for r in read_metrics(tmp_path / "a"))

    crashing, _ = run(tmp_path / "b", proj_seed=1, crash_at_batch=7)  # step 7, after the checkpoint at step 4
    with pytest.raises(RuntimeError, match="node died"):
        crashing.fit()
    assert load_trainer_state(tmp_path / "b" / "last")["step"] == 4
    resumed, proj_b = run(tmp_path / "b", proj_seed=2)  # a different initial projection: only the resume restores it
    assert not torch.equal(proj_b.weight, before)
    assert resumed.fit()["steps"] == 12
    assert any(r.get("event") == "resume" for r in read_metrics(tmp_path / "b"))
    assert torch.equal(proj_a.weight, proj_b.weight) and torch.equal(proj_a.bias, proj_b.bias)  # resumed
    a, b = params_of(straight), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ with the real loader + model


def test_real_loader_and_sermodel_resume_exactly(tmp_path, emosynth3):
    """SERModel (tiny random-init wav2vec2) on EmoSynth-3 shards through build_loader: a crash after the
    checkpoint and a resume give bit-identical weights; best/ loads with SERModel.from_pretrained."""
    from lakd.config import DataConfig, ModelConfig
    from lakd.data.loader import build_loader
    from lakd.models.ser import SERModel

    labels, languages = ["anger", "happiness", "neutral", "sadness"], ["en", "fi", "fr"]
    data = DataConfig(batch_size=4, epoch_samples=12, max_seconds=0.5, shuffle_buffer=16, bucket_buffer=8)
    model_cfg = ModelConfig(
        backbone=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=[16, 16],
            conv_stride=[10, 8],
            conv_kernel=[10, 8],
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2,
        ),
        freeze_feature_encoder=False,
        language_embedding=True,
        dropout=0.1,
    )

    def factory(epoch):
        return build_loader(emosynth3 / "train", labels, languages, cfg=data, train=True, seed=0, epoch=epoch)

    def loss_fn(model, batch):
        out = model(batch["input_values"], batch["attention_mask"], batch["language_ids"])
        ce = F.cross_entropy(out.logits, batch["labels"])
        return ce, {"ce": ce.detach()}

    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("node died")
        return loss_fn(model, batch)

    def run(out, fn):
        torch.manual_seed(0)
        model = SERModel(model_cfg, labels, languages)
        t = Trainer(
            model,
            optim(epochs=2, lr=1e-3, checkpoint_every=2),
            loss_fn=fn,
            train_loader_factory=factory,
            steps_per_epoch=3,
            out_dir=out,
            extra_meta={"kind": "integration"},
        )
        t.fit()
        return t

    straight = run(tmp_path / "a", loss_fn)
    with pytest.raises(RuntimeError, match="node died"):
        run(tmp_path / "b", crashing)
    assert load_trainer_state(tmp_path / "b" / "last")["step"] == 4
    resumed = run(tmp_path / "b", loss_fn)
    a, b = params_of(straight), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = SERModel.from_pretrained(tmp_path / "b" / "best")
    assert all(torch.equal(best.state_dict()[k], resumed.model.state_dict()[k]) for k in best.state_dict())
