"""Checkpoint files under injected faults: random bytes inside a written checkpoint (checksums refuse it, naming
the file), a full disk (a real tmpfs: the error names the file, no temp or staging leftovers, the run resumes
once there is space) and the umask (every checkpoint file and directory gets the user's permissions)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
from tiny_run import BACKBONE
from tiny_training import TinySER, ce_loss, make_batches, make_trainer, optim, params_of
from typer.testing import CliRunner

from lakd.checksums import CHECKSUMS_FILE, ChecksumError
from lakd.config import ModelConfig
from lakd.models.ser import CheckpointError, SERModel
from lakd.train.checkpoint import load_trainer_state
from lakd.train.engine import Trainer
from lakd.train.logging import RunLogger, read_metrics

LABELS, LANGS = ["anger", "happiness", "neutral"], ["en", "fi"]


def tiny_ser(seed: int = 0) -> SERModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=dict(BACKBONE), freeze_feature_encoder=False, language_embedding=True)
    return SERModel(cfg, LABELS, LANGS)


def corrupt(path: Path, n: int = 64) -> None:
    """Overwrite `n` bytes in the middle of `path` with random ones (same size: only a checksum can tell)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ checksums


def test_a_checkpoint_carries_checksums_and_random_bytes_inside_it_are_refused(tmp_path, caplog):
    d = tiny_ser().save_pretrained(tmp_path / "best")
    listed = json.loads((d / CHECKSUMS_FILE).read_text())["files"]
    assert set(listed) == {"config.json", "model.safetensors", "lakd_head.safetensors", "lakd.json"}
    SERModel.from_pretrained(d)  # intact: loads

    corrupt(d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"best/model\.safetensors: corrupted \(its sha256 differs"):
        SERModel.from_pretrained(d)
    # the same corrupted file loaded silently before checksums existed: an old checkpoint still loads, with a warning
    (d / CHECKSUMS_FILE).unlink()
    with caplog.at_level("WARNING", logger="lakd.checksums"):
        SERModel.from_pretrained(d)
    assert f"{d}: no checksums.json (written by an older lakd): its files are not verified" in caplog.text

    e = tiny_ser().save_pretrained(tmp_path / "other")
    (e / "lakd_head.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"other/lakd_head\.safetensors: missing \(listed in checksums\.json\)"):
        SERModel.from_pretrained(e)


def test_commands_that_load_a_corrupted_checkpoint_fail_with_one_line(tmp_path):
    from lakd.cli import app

    d = tiny_ser().save_pretrained(tmp_path / "best")
    corrupt(d / "lakd_head.safetensors", n=16)
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), 16000)
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(d), str(wav)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "cannot load checkpoint:" in res.output and "lakd_head.safetensors: corrupted" in res.output


def test_the_cache_refuses_a_teacher_whose_weights_were_corrupted(tmp_path):
    """`lakd cache` used to compute (and store) knowledge from a teacher with random bytes in its weights."""
    from tiny_run import LABELS as RUN_LABELS
    from tiny_run import make_split

    from lakd.config import DataConfig
    from lakd.distill.cache import CacheError
    from lakd.distill.cache_write import write_teacher_cache

    shards = make_split(tmp_path / "data", "train", ["en"], 8, 0)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=dict(BACKBONE), freeze_feature_encoder=False)
    teacher = SERModel(cfg, RUN_LABELS, ["en"]).save_pretrained(tmp_path / "teachers" / "en" / "best")
    corrupt(teacher / "model.safetensors")
    data = DataConfig(max_seconds=0.5, eval_batch_size=4)
    with pytest.raises(CacheError, match=r"teacher 'en': .*en/best/model\.safetensors: corrupted"):
        write_teacher_cache({"en": str(teacher)}, str(shards), tmp_path / "cache", RUN_LABELS, ["en"], data, "cpu")
    assert not list((tmp_path / "cache").rglob("*.tar"))  # nothing was cached from it


def test_leftovers_of_a_killed_write_are_removed_by_the_next_run(tmp_path):
    """A process killed inside a checkpoint write leaves hidden staging and temp files (nothing can remove
    them then); the next run into the directory holds its lock, so it may and does remove them."""
    make_trainer(tmp_path, optim(epochs=1, checkpoint_every=2)).fit()
    (tmp_path / ".last.staging").mkdir()
    (tmp_path / ".last.staging" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".summary.json.1a2b3c4d.tmp").write_bytes(b"{")
    (tmp_path / "..last.staging.5e6f7a8b.tmp").mkdir()
    make_trainer(tmp_path, optim(epochs=1, checkpoint_every=2)).fit()
    assert hidden_leftovers(tmp_path) == []


def test_a_corrupted_resume_checkpoint_is_refused_naming_the_file(tmp_path):
    make_trainer(tmp_path, optim(epochs=1, checkpoint_every=2)).fit()
    listed = json.loads((tmp_path / "last" / CHECKSUMS_FILE).read_text())["files"]
    assert {"model.safetensors", "lakd.json", "trainer_state.pt"} <= set(listed)
    corrupt(tmp_path / "last" / "trainer_state.pt")
    with pytest.raises(ChecksumError, match=r"last/trainer_state\.pt: corrupted .* delete .*last to start over"):
        load_trainer_state(tmp_path / "last")
    with pytest.raises(ChecksumError, match=r"trainer_state\.pt: corrupted"):
        make_trainer(tmp_path, optim(epochs=2, checkpoint_every=2)).fit()


# ------------------------------------------------------------------------------------------ full disk


class SmallDisk:
    """A directory on a real, small tmpfs (mounted for the test: needs root). `fill()` takes all free space
    with a filler file, `free()` deletes it."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the CPU test machine runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class PlainTiny(nn.Module):
    """TinySER without save_pretrained: the trainer saves it as model.pt through torch.save."""

    def __init__(self):
        super().__init__()
        self.inner = TinySER()

    def forward(self, *args):
        return self.inner(*args)


def hidden_leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*"))


def test_a_full_disk_names_the_file_leaves_no_temp_files_and_the_run_resumes_exactly(tmp_path, small_disk):
    def trainer(out, loss_fn=ce_loss):
        torch.manual_seed(0)
        return Trainer(
            PlainTiny(),
            optim(epochs=2, checkpoint_every=1),
            loss_fn=loss_fn,
            train_loader_factory=lambda e: make_batches(e, 6),
            steps_per_epoch=6,
            out_dir=out,
            logger=RunLogger(tmp_path / "logs" / out.name),  # only the checkpoint writes go to the small disk
        )

    straight = trainer(tmp_path / "straight")
    straight.fit()

    calls = {"n": 0}

    def filling_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # during step 5: its checkpoint finds the disk full
            small_disk.fill()
        return ce_loss(model, batch)

    out = small_disk.path / "run"
    with pytest.raises(OSError) as info:
        trainer(out, filling_loss).fit()
    e = info.value
    assert e.errno == errno.ENOSPC and "No space left on device" in str(e)
    assert Path(e.filename).parent.parent == out and Path(e.filename).suffix == ".pt"  # .last.staging/model.pt
    assert hidden_leftovers(out) == []  # no .tmp files, no staging directory
    assert load_trainer_state(out / "last")["step"] == 4  # the last complete checkpoint, verified

    small_disk.free()
    resumed = trainer(out)
    assert resumed.fit()["steps"] == 12
    assert any(r.get("event") == "resume" and r["step"] == 4 for r in read_metrics(tmp_path / "logs" / "run"))
    a, b = params_of(straight), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saving_a_model_to_a_full_disk_names_the_file_and_leaves_no_temp_directory(small_disk):
    small_disk.fill()
    with pytest.raises(OSError) as info:
        tiny_ser().save_pretrained(small_disk.path / "best")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(small_disk.path / "best" / "model.safetensors")
    assert hidden_leftovers(small_disk.path) == [] and not (small_disk.path / "best").exists()


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, small_disk):
    """A real `lakd train teacher` whose run directory is on the full disk: one line, the file, exit 1."""
    from tiny_run import tiny_run

    config = tiny_run(tmp_path)
    small_disk.fill()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lakd.cli", "train", "teacher", "--language", "en", "-c", str(config)]
    r = subprocess.run([*cmd, "--run-dir", str(small_disk.path / "run")], capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert f"error: no space left on device: {small_disk.path / 'run'}" in " ".join(r.stderr.split())


# ------------------------------------------------------------------------------------------ umask


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o007, 0o660, 0o770)])
def test_checkpoint_files_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    saved = os.umask(mask)
    try:
        t = Trainer(
            tiny_ser(),
            optim(epochs=1, checkpoint_every=2),
            loss_fn=ce_loss,
            train_loader_factory=lambda e: make_batches(e, 4),
            steps_per_epoch=4,
            out_dir=tmp_path / "run",
            extra_modules={"proj": nn.Linear(2, 2)},
        )
        t.fit()
    finally:
        os.umask(saved)
    run = tmp_path / "run"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"model.safetensors", "lakd_head.safetensors", "trainer_state.pt", "extra_modules.pt", "run.lock"} <= {
        p.name for p in files
    }
    wrong = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {k: v for k, v in wrong.items() if v != oct(file_mode)} == {}
    for d in (run, run / "best", run / "last"):
        assert stat.S_IMODE(d.stat().st_mode) == dir_mode, d


def test_a_hugging_face_export_follows_the_umask(tmp_path):
    """The export is what a group shares most: mkdtemp (0o700) and safetensors (0o600) no longer decide."""
    from lakd.export.hf import export_hf

    ckpt = tiny_ser().save_pretrained(tmp_path / "best")
    saved = os.umask(0o022)
    try:
        out = Path(export_hf(ckpt, tmp_path / "hf")["path"])
    finally:
        os.umask(saved)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir() if p.is_file()}
    assert "model.safetensors" in modes and set(modes.values()) == {oct(0o644)}, modes
