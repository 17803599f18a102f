"""Training progress for people watching: step/total, epoch, loss, samples/s and ETA, as a rich bar on a terminal
and as text on the training lines when the output goes to a log file."""

import io

import pytest
from rich.console import Console

from lakd.train.logging import RunLogger
from lakd.train.progress_display import ProgressDisplay


def test_eta_from_wall_clock_since_start():
    p = ProgressDisplay(total_steps=100, start_step=20, live=False)
    assert p.eta_seconds(20) is None  # nothing measured yet
    p.started -= 30.0  # 30 s for 10 steps -> 3 s per step, 70 steps left
    assert p.eta_seconds(30) == pytest.approx(210.0, rel=0.01)
    text = p.describe(30, {"train/epoch": 1.5, "train/loss": 0.75, "train/samples_per_s": 12.34})
    assert text.startswith("step 30/100 (30%)  epoch 1.50  loss 0.75  12.3 samples/s  ETA 0:03:")


def test_plain_training_lines_carry_progress_and_eta(tmp_path, capsys):
    logger = RunLogger(tmp_path)
    logger.start_progress(total_steps=50, step=0)
    logger.log({"loss": 1.5, "epoch": 0.2, "samples_per_s": 8.0, "lr": 1e-3}, step=10, prefix="train/")
    logger.log({"ua": 0.5}, step=10, prefix="dev/")
    logger.close()
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if "10/50" in l)
    assert "step 10/50 (20%)" in line and "epoch 0.20" in line and "loss 1.5" in line and "ETA" in line
    assert "train/lr=" in line and "train/loss=" not in line  # no value twice
    assert "dev/ua=0.5" in err  # other lines unchanged


def test_terminal_gets_a_live_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    p = ProgressDisplay(total_steps=40, console=console)
    assert p.live
    p.update(10, {"train/loss": 2.0, "train/epoch": 0.25})
    p.close()
    text = out.getvalue()
    assert "training" in text and "10/40" in text and "loss 2" in text


def test_the_trainer_reports_progress_with_an_eta(tmp_path, capsys):
    from tiny_training import make_trainer, optim  # tests/ is on sys.path

    make_trainer(tmp_path, optim(epochs=2), n_batches=3).fit()  # 6 steps, a training line every 2
    lines = [l for l in capsys.readouterr().err.splitlines() if "/6 (" in l]
    assert [l.split()[1] for l in lines] == ["2/6", "4/6", "6/6"]
    assert all("epoch" in l and "loss" in l and "samples/s" in l and "ETA" in l for l in lines)
    assert "ETA 0:00:00" in lines[-1]
