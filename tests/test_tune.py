"""A real Ray Tune search on the tiny config (Optuna TPE, ASHA, seeded), killed after its first finished trial and
resumed; its best.yaml launched; the trials' offline W&B runs read back; and the command a W&B agent builds from
tune/sweep.yaml run as the agent would run it."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from wandb_records import run_facts

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "synth.speakers_per_language=3",
    "synth.utterances_per_speaker=8",
    "synth.splits={train: 1, dev: 1, test: 1}",
    "teacher_optim.epochs=1",
    "student_optim.epochs=2",
    "student_optim.eval_every=2",  # 3 steps an epoch: dev evaluations at steps 2, 4 and 6
    "data.batch_size=8",
    "wandb.mode=offline",
    "wandb.log_every=1",
]


def search_cmd(run: Path) -> list[str]:
    cmd = [sys.executable, str(REPO / "tune" / "search.py"), "--config", "tiny", "--run-dir", str(run)]
    cmd += ["--num-samples", "4", "--algorithm", "tpe", "--scheduler", "asha", "--seed", "0", "--num-cpus", "2"]
    for o in TINY:
        cmd += ["--set", o]
    return cmd


def env() -> dict:
    """The venv's programs first on PATH (wandb, python), as with an activated venv."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def finished_trials(search: Path) -> dict[str, float]:
    return {p.parent.parent.name: p.stat().st_mtime for p in search.glob("trial_*/student/done.json")}


@pytest.mark.slow
def test_search_killed_and_resumed_writes_a_best_config_that_launches(tmp_path):
    run, search = tmp_path / "run", tmp_path / "run" / "tune" / "search"
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(search_cmd(run), cwd=tmp_path, env=env(), stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 600
    while not finished_trials(search) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert driver.poll() is None, "the search ended before any trial finished: " + (tmp_path / "first.log").read_text()
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die together, as when a job is killed
    driver.wait()
    done_before = finished_trials(search)
    assert done_before and not (search / "summary.json").exists()

    resumed = subprocess.run(search_cmd(run), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "resuming the search" in resumed.stderr
    for trial, mtime in done_before.items():  # finished trials were not run again
        assert finished_trials(search)[trial] == mtime

    summary = json.loads((search / "summary.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4 and summary["errors"] == 0 and summary["max_evals_per_trial"] == 3
    assert max(t["evals"] for t in trials) == 3  # eval_every: a trial is not cut after its first evaluation
    assert all(t["checkpoint"] and Path(t["checkpoint"], "lakd.json").exists() for t in trials)  # stopped too
    assert summary["best"]["dev UA"] == max(t["best_dev_ua"] for t in trials)
    assert {"en", "fi", "fr", "overall"} <= set(summary["test"]["results"])  # the one test evaluation
    assert (search / "trials.csv").exists() and (search / "trials.md").read_text().count("| trial_") == 4
    assert len(list((search / "plots").glob("*.png"))) == 9

    # every trial is a full W&B run: named by its values, grouped by search, with every loss term and dev UA
    facts = [run_facts(f) for f in glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))]
    students: dict[str, dict] = {}  # by trial (its run name): a trial resumed after the kill continues its W&B run
    for f in facts:
        if (f["job_type"] or "").startswith("distill-"):
            seen = students.setdefault(f["name"], {**f, "history_keys": set(), "run_ids": set()})
            seen["history_keys"] |= f["history_keys"]
            seen["run_ids"].add(f["run_id"])
    assert len(students) == 4
    # a trial that had finished before the kill was never rerun: exactly one W&B run. (A trial killed mid-run
    # continues its run id from <student>/wandb_run_id; once in CI a killed trial showed a second id: see
    # docs/tuning.md, "Known limits".)
    for trial in done_before:
        assert sum(len(f["run_ids"]) for n, f in students.items() if f"-{trial.split('_', 1)[1]}-" in n) == 1, trial
    for f in students.values():
        name = f["name"]
        assert name.startswith("tiny-") and "-λ0." in name and "-T" in name and "-D" in name
        assert f["group"] == "tiny-search" and {"tune", "tpe", "asha"} <= set(f["tags"])
        assert {"distill", "student", "student_optim"} <= f["config_keys"]
        assert {"train/loss", "train/ce", "train/kl", "dev/ua", "dev/wa", "dev/ua_en", "dev/wa_fr"} <= f["history_keys"]
    sync = f"wandb sync --dry-run {run}/wandb/offline-run-*"  # the docs' command finds every offline run
    synced = subprocess.run(sync, shell=True, env=env(), capture_output=True, text=True, timeout=120)
    assert synced.returncode == 0 and synced.stdout.count(".wandb") + synced.stderr.count(".wandb") == len(facts)

    again = subprocess.run(search_cmd(run), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    later = json.loads((search / "summary.json").read_text())
    assert len(later["trials"]) == 4 and len(later["sessions"]) == 2  # accumulated, nothing overwritten

    launched = subprocess.run(
        [sys.executable, "-m", "lakd.cli", "launch", "--config", str(search / "best.yaml")],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    best_cfg = yaml.safe_load((search / "best.yaml").read_text())
    assert best_cfg["distill"]["kd_weight"] == summary["best"]["params"]["distill.kd_weight"]
    assert (search / "best-run" / "student" / "best" / "lakd.json").exists()
    assert (search / "best-run" / "stages" / "evaluate" / "done.json").exists()

    # what a W&B agent runs for tune/sweep.yaml, pointed at this run (its teachers and cache are reused)
    from lakd.tune.sweep import agent_command

    sweep = yaml.safe_load((REPO / "tune" / "sweep.yaml").read_text())
    sweep["parameters"].update(config={"value": str(run / "config.yaml")}, run_dir={"value": str(run)})
    values = {"distill.kd_weight": 0.3, "distill.temperature": 2.5, "student.language_embedding": False}
    cmd = agent_command(sweep, values)
    assert cmd[:3] == ["/usr/bin/env", "python", "tune/sweep_run.py"] and "--distill.kd_weight=0.3" in cmd
    agent_env = {**env(), "WANDB_RUN_ID": "sweeprun1", "WANDB_SWEEP_ID": "sweep1"}
    swept = subprocess.run(cmd, cwd=REPO, env=agent_env, capture_output=True, text=True, timeout=600)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    student = run / "sweep" / "sweep1" / "sweeprun1" / "student"
    assert json.loads((student / "best" / "lakd.json").read_text())["meta"]["distill"]["kd_weight"] == 0.3
    [sweep_run] = [run_facts(f) for f in glob.glob(str(run / "wandb" / "offline-run-*-sweeprun1" / "run-*.wandb"))]
    assert {"train/loss", "train/kl", "dev/ua"} <= sweep_run["history_keys"]
