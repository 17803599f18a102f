"""tune/search.py with a real local Ray: teachers and cache once, then students with sampled λ, T and depth,
dev UA reported to Tune at every evaluation, W&B offline runs per trial, and a summary of the search."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "synth.speakers_per_language=3",
    "synth.utterances_per_speaker=8",
    "synth.splits={train: 1, dev: 1, test: 1}",
    "teacher_optim.epochs=1",
    "student_optim.epochs=2",
    "wandb.mode=offline",
    "threads=1",
]


@pytest.mark.slow
def test_search_runs_trials_and_picks_the_best_on_dev(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "tune" / "search.py"),
        "--config",
        "tiny",
        "--run-dir",
        str(run),
        "--num-samples",
        "2",
        "--num-cpus",
        "2",
        "--cpus-per-trial",
        "1",
        "--depths",
        "1,2",
    ]
    for o in TINY:
        cmd += ["--set", o]
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    summary = json.loads((run / "tune" / "summary.json").read_text())
    assert summary["errors"] == 0 and len(summary["trials"]) == 2
    for t in summary["trials"]:
        p = t["params"]
        assert 0.1 <= p["distill.kd_weight"] <= 0.9 and 1.0 <= p["distill.temperature"] <= 10.0
        assert p["student.attention_depth"] in (1, 2)
        assert 0.0 <= t["dev_ua"] <= 1.0 and t["evals"] >= 1
    assert summary["best"]["dev_ua"] == max(t["dev_ua"] for t in summary["trials"])
    # each trial trained its own student with its own hyper-parameters
    metas = [json.loads(p.read_text()) for p in (run / "tune").rglob("student/best/lakd.json")]
    assert len(metas) == 2
    assert {round(m["meta"]["distill"]["kd_weight"], 6) for m in metas} == {
        round(t["params"]["distill.kd_weight"], 6) for t in summary["trials"]
    }
    # W&B offline runs, one per trial
    assert len(list((run / "wandb").rglob("*.wandb"))) >= 2
    assert "Ray Tune: distillation search" in res.stdout
