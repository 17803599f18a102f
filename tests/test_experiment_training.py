"""The report's training section (lakd.experiments.training): where each model's best dev evaluation was, and
whether it was still improving when its schedule ended. Metrics written with the trainer's own RunLogger; the
end-to-end grid (test_experiments.py, slow) checks it on real trainings."""

from __future__ import annotations

import pytest

from lakd.experiments.markdown import _training
from lakd.experiments.training import model_training, summarize
from lakd.train.logging import RunLogger


def _model(tmp_path, name, dev_ua, steps_per_eval=10):
    run = tmp_path / name
    log = RunLogger(run, console=False)
    for i, ua in enumerate(dev_ua, 1):
        log.log({"dev/ua": ua}, step=i * steps_per_eval)
    best = max(range(len(dev_ua)), key=lambda i: dev_ua[i])
    steps = len(dev_ua) * steps_per_eval
    log.summary({"steps": steps, "best_step": (best + 1) * steps_per_eval, "best_metric": dev_ua[best],
                 "train_seconds": 12.5})  # fmt: skip
    log.close()
    return run / "best"


def test_a_model_still_improving_at_its_last_evaluation_is_flagged(tmp_path):
    rising = model_training(_model(tmp_path, "rising", [0.4, 0.5, 0.6]))
    peaked = model_training(_model(tmp_path, "peaked", [0.4, 0.7, 0.6]))
    assert rising["best_at_last_eval"] and rising["best_step"] == 30 and rising["last_dev_ua"] == 0.6
    assert not peaked["best_at_last_eval"] and peaked["best_step"] == 20 and peaked["best_dev_ua"] == 0.7
    assert model_training(tmp_path / "never-trained" / "best") is None
    t = summarize({"0": [rising], "1": [peaked]})
    assert t["models"] == 2 and t["best_at_last_eval"] == 1 and t["best_step"] == pytest.approx(25)
    assert summarize({"0": []}) is None
    md = "\n".join(_training({"v": t}, {"v": "Variant"}, ["v"]))
    assert "| Variant | 2 | 30 | 25 (83%) | 1 | 12 |" in md and "still improving" in md
