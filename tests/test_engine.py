"""The training engine on a tiny model with in-memory batches: learning, files, exact resume after a crash
or a preemption signal, early stopping, grad accumulation, non-finite steps, DDP and DeepSpeed (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.config import OptimConfig
from lakd.train.checkpoint import load_trainer_state
from lakd.train.distributed import find_free_port
from lakd.train.engine import Trainer
from lakd.train.logging import read_metrics
from lakd.train.optim import lr_lambda
from lakd.train.preemption import EXIT_PREEMPTED, Preempted

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 3
FRAME = 40


# ------------------------------------------------------------------------------------ tiny model + data


@dataclass
class TinyOutput:
    logits: torch.Tensor
    pooled: torch.Tensor


class TinySER(nn.Module):
    """Same interface as lakd.models.ser.SERModel: forward(input_values, attention_mask, language_ids)."""

    def __init__(self, hidden: int = 16, n_languages: int = 2, dropout: float = 0.2):
        super().__init__()
        self.frame = nn.Linear(FRAME, hidden)
        self.lang = nn.Embedding(n_languages + 1, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, input_values, attention_mask=None, language_ids=None):
        b, t = input_values.shape
        x = input_values[:, : t // FRAME * FRAME].reshape(b, -1, FRAME)
        h = torch.tanh(self.frame(x))
        if attention_mask is not None:
            m = attention_mask[:, : t // FRAME * FRAME].reshape(b, -1, FRAME).float().amin(-1, keepdim=True)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        else:
            pooled = h.mean(1)
        if language_ids is not None:
            pooled = pooled + self.lang(language_ids.clamp(min=-1) + 1)
        pooled = self.drop(self.norm(pooled))
        return TinyOutput(self.head(pooled), pooled)

    def save_pretrained(self, directory, extra_meta=None):
        import shutil

        from safetensors.torch import save_file

        directory = Path(directory)
        if directory.exists():  # like SERModel: the directory is replaced as a whole
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "lakd.json").write_text(json.dumps({"kind": "tiny", **(extra_meta or {})}, default=str))

    @classmethod
    def from_pretrained(cls, directory):
        from safetensors.torch import load_file

        m = cls()
        m.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
        return m


def make_batches(
    epoch: int, n_batches: int = 6, batch_size: int = 8, seed: int = 0, rank: int = 0, world_size: int = 1
) -> list[dict]:
    """Deterministic per epoch; class k = a louder signal with k-dependent offset; ragged lengths."""
    out = []
    for b in range(n_batches):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch * 1_009 + b * world_size + rank)
        labels = torch.randint(0, N_CLASSES, (batch_size,), generator=g)
        lengths = torch.randint(4 * FRAME, 8 * FRAME + 1, (batch_size,), generator=g)
        x = 0.3 * torch.randn(batch_size, 8 * FRAME, generator=g) + 0.5 * labels[:, None].float()
        mask = (torch.arange(8 * FRAME)[None] < lengths[:, None]).long()
        out.append(
            {
                "input_values": x * mask,
                "attention_mask": mask,
                "labels": labels,
                "language_ids": torch.randint(-1, 2, (batch_size,), generator=g),
                "keys": [f"e{epoch}b{b}i{i}" for i in range(batch_size)],
                "languages": ["en"] * batch_size,
            }
        )
    return out


def ce_loss(model, batch):
    out = model(batch["input_values"], batch["attention_mask"], batch["language_ids"])
    ce = F.cross_entropy(out.logits, batch["labels"])
    return ce, {"ce": ce.detach(), "pooled_norm": out.pooled.norm(dim=-1).mean().detach()}


def dev_eval_fn(n_batches: int = 2):
    dev = make_batches(999, n_batches=n_batches)

    def fn(model):
        correct = total = 0
        for b in dev:
            pred = model(b["input_values"], b["attention_mask"], b["language_ids"]).logits.argmax(-1)
            correct += int((pred == b["labels"]).sum())
            total += len(pred)
        return {"ua": correct / total, "wa": correct / total}

    return fn


def optim(**kw) -> OptimConfig:
    base = dict(epochs=2, lr=3e-2, warmup_ratio=0.2, grad_clip=1.0, checkpoint_every=1000, precision="fp32")
    base.update(kw)
    return OptimConfig(**base)


def make_trainer(tmp: Path, cfg: OptimConfig, loss_fn=ce_loss, eval_fn=None, n_batches=6, seed=0, **kw) -> Trainer:
    torch.manual_seed(seed)
    model = TinySER()
    return Trainer(
        model,
        cfg,
        loss_fn=loss_fn,
        train_loader_factory=lambda e: make_batches(e, n_batches),
        steps_per_epoch=n_batches,
        out_dir=tmp,
        eval_fn=eval_fn,
        seed=seed,
        log_every=2,
        extra_meta={"recipe": "unit-test"},
        **kw,
    )


def params_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


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


# ------------------------------------------------------------------------------ multi-process (torchrun)

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from test_engine import TinySER, make_batches, ce_loss, optim
    from lakd.train.distributed import init_distributed, all_gather_object
    from lakd.train.engine import Trainer

    dist = init_distributed()
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)
    use_ds = {deepspeed!r}
    t = Trainer(model, optim(epochs=1, warmup_ratio=0.0), loss_fn=ce_loss, steps_per_epoch=3,
                train_loader_factory=lambda e: make_batches(e, 3, 4, rank=dist.rank, world_size=dist.world_size),
                out_dir={out!r}, dist=dist, use_deepspeed=use_ds, zero_stage={zero}, micro_batch_size=4)
    t.fit()
    params = {{k: v.tolist() for k, v in t.model.state_dict().items()}}
    gathered = all_gather_object(params)
    if dist.is_main:
        json.dump({{"same": all(g == gathered[0] for g in gathered), "params": gathered[0],
                   "world": dist.world_size, "launcher": dist.launcher}}, open({result!r}, "w"))
""")


def run_torchrun(tmp_path: Path, nproc: int, deepspeed: bool = False, zero: int = 0) -> dict:
    result = tmp_path / f"result_{nproc}.json"
    script = tmp_path / "train_script.py"
    script.write_text(
        DDP_SCRIPT.format(
            tests=str(REPO / "tests"),
            repo=str(REPO),
            out=str(tmp_path / f"run{nproc}"),
            result=str(result),
            deepspeed=deepspeed,
            zero=zero,
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = (
        [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(find_free_port()), str(script)]
        if nproc > 1
        else [sys.executable, str(script)]
    )
    rc, out = run_in_new_session(cmd, env=env, cwd=tmp_path, timeout=240)
    assert rc == 0, out[-6000:]
    return json.loads(result.read_text())


def run_in_new_session(cmd, env, cwd, timeout):
    """Run a launcher; on timeout kill its whole process group (no orphaned ranks left behind)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[0]} timed out after {timeout}s:\n{out[-6000:]}")
    return proc.returncode, out


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 ranks x 4 samples (DDP, gloo) == 1 process x 8 samples (the same samples): gradients are averaged."""
    two = run_torchrun(tmp_path, 2)
    assert two["same"] and two["world"] == 2 and two["launcher"] == "torchrun"
    # one process seeing both ranks' batches concatenated
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)

    def merged(epoch):
        r0, r1 = make_batches(epoch, 3, 4, rank=0, world_size=2), make_batches(epoch, 3, 4, rank=1, world_size=2)
        return [
            {k: (torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] + b[k]) for k in a} for a, b in zip(r0, r1)
        ]

    t = Trainer(
        model,
        optim(epochs=1, warmup_ratio=0.0),
        loss_fn=ce_loss,
        train_loader_factory=merged,
        steps_per_epoch=3,
        out_dir=tmp_path / "one",
    )
    t.fit()
    for k, v in t.model.state_dict().items():
        torch.testing.assert_close(torch.tensor(two["params"][k]), v, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- DeepSpeed
# DeepSpeed creates a process group and global state, so it runs in a subprocess, never inside pytest.

DS_SINGLE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
    import torch
    torch.set_num_threads(1)
    from test_engine import TinySER, make_batches, ce_loss, optim
    from lakd.train.distributed import init_distributed
    from lakd.train.engine import Trainer

    dist = init_distributed()
    out = {{}}

    def train(name, use_ds, zero, loss_fn=ce_loss, dropout=0.0, **cfg):
        torch.manual_seed(0)
        m = TinySER(dropout=dropout)
        t0 = time.perf_counter()
        t = Trainer(m, optim(**cfg), loss_fn=loss_fn, steps_per_epoch=6,
                    train_loader_factory=lambda e: make_batches(e, 6), out_dir={out_dir!r} + "/" + name,
                    dist=dist, use_deepspeed=use_ds, zero_stage=zero, micro_batch_size=8)
        out[name + "_init_s"] = time.perf_counter() - t0
        t.fit()
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    ref = train("plain", False, 0, epochs=1, grad_accum=2)
    for zero in (0, 1, 2):
        out[f"diff_zero{{zero}}"] = float((train(f"ds{{zero}}", True, zero, epochs=1, grad_accum=2) - ref).abs().max())
    # exact resume under ZeRO-2 with dropout and a crash after the checkpoint at step 4
    cfg = dict(epochs=2, checkpoint_every=2)
    straight = train("z2_straight", True, 2, dropout=0.2, **cfg)
    calls = {{"n": 0}}
    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("node died")
        return ce_loss(model, batch)
    try:
        train("z2_resumed", True, 2, loss_fn=crashing, dropout=0.2, **cfg)
    except RuntimeError as e:
        out["crash"] = str(e)
    resumed = train("z2_resumed", True, 2, dropout=0.2, **cfg)
    out["resume_diff"] = float((straight - resumed).abs().max())
    json.dump(out, open({result!r}, "w"))
""")


def test_deepspeed_single_process_matches_torch_and_resumes_exactly(tmp_path):
    result = tmp_path / "ds.json"
    script = tmp_path / "ds_script.py"
    script.write_text(
        DS_SINGLE_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), out_dir=str(tmp_path), result=str(result))
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    rc, out = run_in_new_session([sys.executable, str(script)], env=env, cwd=tmp_path, timeout=240)
    assert rc == 0, out[-6000:]
    r = json.loads(result.read_text())
    for zero in (0, 1, 2):
        assert r[f"diff_zero{zero}"] < 1e-5, r
    assert r["crash"] == "node died"
    assert r["resume_diff"] == 0.0, r
    assert (tmp_path / "z2_resumed" / "last" / "deepspeed" / "state").is_dir()
    assert (tmp_path / "ds2" / "best" / "model.safetensors").exists()


@pytest.mark.slow
def test_deepspeed_zero2_two_processes(tmp_path):
    """2 ranks, gloo, ZeRO-2: identical parameters on both ranks, equal to one process on the merged batches."""
    two = run_torchrun(tmp_path, 2, deepspeed=True, zero=2)
    assert two["same"] and two["world"] == 2
    torch.manual_seed(0)
    model = TinySER(dropout=0.0)

    def merged(epoch):
        r0, r1 = make_batches(epoch, 3, 4, rank=0, world_size=2), make_batches(epoch, 3, 4, rank=1, world_size=2)
        return [
            {k: (torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] + b[k]) for k in a} for a, b in zip(r0, r1)
        ]

    Trainer(
        model,
        optim(epochs=1, warmup_ratio=0.0),
        loss_fn=ce_loss,
        train_loader_factory=merged,
        steps_per_epoch=3,
        out_dir=tmp_path / "one",
    ).fit()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(torch.tensor(two["params"][k]), v, rtol=1e-4, atol=1e-5)


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
