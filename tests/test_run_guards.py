"""A run directory under injected faults: a second process started into it (refused, naming the holder; a holder
killed with -9 does not block the resume, even while a forked child of it lives on), a rerun with a changed
config (refused with the differences; --restart starts afresh, --resume-changed continues), and SIGTERM to a
real `lakd` process (exit 75 with one line)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny_run import tiny_run
from tiny_training import make_trainer, optim

from lakd.config import Config
from lakd.config.diff import ConfigChanged, result_settings
from lakd.train.logging import read_metrics
from lakd.train.run_dir import claim_run_dir, read_settings

TESTS = Path(__file__).resolve().parent

HOLDER = textwrap.dedent("""
    import multiprocessing, os, sys, time
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from tiny_training import ce_loss, make_trainer, optim

    out, hold = Path(sys.argv[1]), Path(sys.argv[2])
    child = []

    def loss(model, batch):
        if hold.exists() and not child:  # the holder: fork a long-lived child (like a data-loader worker), wait
            child.append(multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,)))
            child[0].start()
            (hold.parent / "child.pid").write_text(str(child[0].pid))
            (hold.parent / "holding").write_text(str(os.getpid()))
            while hold.exists():
                time.sleep(0.05)
        return ce_loss(model, batch)

    try:
        print("finished", make_trainer(out, optim(epochs=1), loss_fn=loss).fit()["steps"])
    except Exception as e:
        print(f"{{type(e).__name__}}: {{e}}")
        sys.exit(3)
""")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_run_into_one_directory_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(tests=str(TESTS)))
    out, hold = tmp_path / "run", tmp_path / "hold"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "4242"}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    hold.write_text("")
    holder = subprocess.Popen([sys.executable, str(script), str(out), str(hold)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    child_pid = None
    try:
        _wait_for(tmp_path / "holding", holder)
        child_pid = int((tmp_path / "child.pid").read_text())
        second = subprocess.run([sys.executable, str(script), str(out), str(hold)], env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert second.returncode == 3, second.stdout + second.stderr
        assert (
            f"RunDirBusy: {out} is in use by another run: pid {holder.pid} on {socket.gethostname()}, "
            f"SLURM job 4242, since " in second.stdout
        )
        assert not (out / "last").exists()  # the refused run wrote nothing

        holder.send_signal(signal.SIGKILL)  # like a node failure: no cleanup at all
        holder.wait(timeout=30)
        os.kill(child_pid, 0)  # the forked child still lives (it would keep an inherited lock)
        hold.unlink()
        t0 = time.monotonic()
        third = subprocess.run([sys.executable, str(script), str(out), str(hold)], env=env, capture_output=True,
                               text=True, timeout=300)  # fmt: skip
        assert third.returncode == 0 and "finished 6" in third.stdout, third.stdout + third.stderr
        assert time.monotonic() - t0 < 60
        assert json.loads((out / "run.lock").read_text())["pid"] != holder.pid  # the new holder wrote its name
    finally:
        if holder.poll() is None:
            holder.kill()
        if child_pid is not None:
            subprocess.run(["kill", "-9", str(child_pid)], check=False)


def test_a_changed_config_is_refused_with_the_differences_unless_asked_to_restart_or_resume(tmp_path):
    cfg = Config()
    before = result_settings(cfg, "teachers")
    out = tmp_path / "run"
    with claim_run_dir(out, before) as decision:
        assert decision == "new"
        make_trainer(out, optim(epochs=1, checkpoint_every=2)).fit()
    # keys that do not change the result (workers, checkpoint interval, launch, logging, device) are not a change
    same = cfg.copy(**{"data.num_workers": 4, "teacher_optim.checkpoint_every": 7, "wandb.mode": "disabled"})
    with claim_run_dir(out, result_settings(same, "teachers")) as decision:
        assert decision == "same"
    changed = result_settings(cfg.copy(**{"teacher_optim.lr": 1e-4, "seed": 3}), "teachers")
    with pytest.raises(ConfigChanged, match=(
        rf"^{out} was started with other settings: seed: 0 → 3; teacher_optim.lr: 0.0003 → 0.0001\. Rerun with "
        r"--restart to start it afresh or --resume-changed to continue it with the new settings"
    )):  # fmt: skip
        with claim_run_dir(out, changed):
            pass
    assert (out / "last").exists()  # refused: nothing touched

    with claim_run_dir(out, changed, "resume") as decision:  # continue anyway: recorded, files kept
        assert decision == "resume" and (out / "last").exists()
    assert read_settings(out)["history"][-1]["changes"] == ["seed: 0 → 3", "teacher_optim.lr: 0.0003 → 0.0001"]
    with claim_run_dir(out, changed) as decision:
        assert decision == "same"

    with claim_run_dir(out, before, "restart") as decision:  # start afresh: the run's files go, step 0 again
        assert decision == "restart"
        assert sorted(p.name for p in out.iterdir()) == ["run.lock", "settings.json"]
        assert make_trainer(out, optim(epochs=1)).fit()["steps"] == 6
    assert [r.get("event") for r in read_metrics(out)].count("resume") == 0
    from lakd.train.logging import WANDB_ID_FILE
    from lakd.train.run_dir import RUN_FILES

    assert WANDB_ID_FILE in RUN_FILES  # a run started afresh is a new W&B run, not appended to the old one


def test_sigterm_exits_75_with_one_line_and_a_second_cli_run_is_refused_naming_the_first(tmp_path):
    config = tiny_run(tmp_path, max_steps=5000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "lakd.cli", "train", "teacher", "--language", "en", "-c", str(config)]
    first = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        metrics = tmp_path / "run" / "teachers" / "en" / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while not (metrics.exists() and '"step": 2,' in metrics.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        line = " ".join(second.stderr.split())
        assert f"error: {tmp_path / 'run' / 'teachers' / 'en'} is in use by another run: pid {first.pid} on" in line

        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 75, err[-3000:]
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "preempted by SIGTERM at step" in stopped[0]
    assert stopped[0].endswith("rerun the same command to resume")
    assert any(r.get("event") == "preempted" for r in read_metrics(metrics.parent))


def test_the_cli_refuses_a_changed_config_and_restarts_or_resumes_when_asked(tmp_path):
    """Real `lakd train teacher` / `lakd distill` runs: a changed λ no longer returns the old student as
    "already trained"; the refusal shows the difference; --restart retrains, --resume-changed keeps the run."""
    from typer.testing import CliRunner

    from lakd.cli import app

    config = tiny_run(tmp_path, max_steps=3)
    run = tmp_path / "run"

    def lakd(*args):
        res = CliRunner().invoke(app, [*args, "-c", str(config)])
        return res.exit_code, " ".join(res.output.split())

    assert lakd("train", "teacher", "--language", "en")[0] == 0
    assert lakd("distill")[0] == 0
    student_before = (run / "student" / "best" / "model.safetensors").read_bytes()

    code, out = lakd("distill", "--set", "distill.kd_weight=0.5")
    assert code == 2 and "Traceback" not in out
    assert f"error: config: {run / 'student'} was started with other settings: distill.kd_weight: 0.25 → 0.5." in out
    code, out = lakd("train", "teacher", "--language", "en", "--set", "teacher_optim.lr=0.01")
    assert code == 2 and "teacher_optim.lr: 0.001 → 0.01" in out

    code, out = lakd("distill", "--set", "distill.kd_weight=0.5", "--resume-changed")  # keep the finished student
    assert code == 0 and (run / "student" / "best" / "model.safetensors").read_bytes() == student_before
    assert read_settings(run / "student")["history"][-1]["action"] == "resume"

    code, out = lakd("distill", "--set", "distill.kd_weight=0.75", "--restart")  # train it again from step 0
    assert code == 0, out
    events = [r.get("event") for r in read_metrics(run / "student")]
    assert events.count("start") == 1 and "resume" not in events and "already_finished" not in events
    meta = json.loads((run / "student" / "best" / "lakd.json").read_text())
    assert meta["meta"]["distill"]["kd_weight"] == 0.75
    code, out = lakd("train", "teacher", "--language", "en", "--restart", "--resume-changed")
    assert code == 2 and "--restart and --resume-changed exclude each other" in out


@pytest.mark.slow
def test_lakd_launch_refuses_a_changed_config_naming_the_units_and_restarts_only_them(tmp_path):
    """The whole graph with the real recipes (debug executor): a changed student setting is refused before
    anything runs; --restart retrains the student (its recipe starts its directory afresh), not the teacher."""
    from typer.testing import CliRunner

    from lakd.cli import app

    config = tiny_run(tmp_path, max_steps=2)
    run = tmp_path / "run"

    def lakd(*args):
        res = CliRunner().invoke(app, ["launch", "-c", str(config), "--executor", "debug", *args])
        return res.exit_code, " ".join(res.output.split())

    assert lakd()[0] == 0
    teacher_before = (run / "teachers" / "en" / "best" / "model.safetensors").read_bytes()
    code, out = lakd("--set", "student_optim.lr=0.01", "--set", "teacher_optim.lr=0.002")
    assert code == 2 and "Traceback" not in out
    assert f"error: config: {run} (teachers[en], student, evaluate) was started with other settings:" in out
    assert "student_optim.lr: 0.001 → 0.01; teacher_optim.lr: 0.001 → 0.002" in out

    code, out = lakd("--set", "student_optim.lr=0.01", "--restart")
    assert code == 0, out
    assert (run / "teachers" / "en" / "best" / "model.safetensors").read_bytes() == teacher_before
    assert read_settings(run / "student")["history"][-1]["action"] == "restart"
    assert [r.get("event") for r in read_metrics(run / "student")].count("start") == 1
