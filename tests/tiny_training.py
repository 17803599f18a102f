"""The training engine's test fixtures: a tiny SERModel stand-in, deterministic in-memory batches, a loss, a dev
evaluation and a Trainer factory. Not a test module: test files (and the subprocess scripts of the DDP and
DeepSpeed tests) import it (tests/ is on sys.path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.config import OptimConfig
from lakd.train.engine import Trainer

N_CLASSES = 3
FRAME = 40


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
