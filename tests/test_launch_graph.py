"""The job graph with the debug (in-process) and local (subprocess) executors, on stand-in recipes that
record their calls: stage order, the teacher array, outputs flowing downstream, state/done markers, skip of
finished units on relaunch, failures, requeue semantics, status. The real SLURM runs are in
test_slurm_cluster.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from counting_loop import counting_training_loop

from lakd.config import Config, ConfigError, StageResources
from lakd.launch import LaunchError, StageTask, build_graph, launch, print_status, stage_status
from lakd.launch.executors import make_executor
from lakd.launch.graph import stage_resources
from lakd.launch.units import unit_dir

# jobs of the local executor unpickle these functions in another process: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------------------------------- stand-in recipes


def _note(cfg, line: str) -> None:
    with open(Path(cfg.run_dir) / "calls.log", "a") as f:
        f.write(line + "\n")


def fake_prepare(cfg):
    _note(cfg, "shards")
    for split in ("train", "dev", "test"):
        d = Path(cfg.run_dir) / "data" / split
        d.mkdir(parents=True, exist_ok=True)
        (d / "shard-000000.tar").write_bytes(b"")
    return str(Path(cfg.run_dir) / "data")


def fake_teacher(cfg, language):
    if (Path(cfg.run_dir) / f"FAIL_{language}").exists():
        raise RuntimeError(f"teacher {language} diverged")
    _note(cfg, f"teacher {language}")
    out = Path(cfg.run_dir) / "teachers" / language
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 10, "dev_ua": 0.25 + 0.1 * len(language), "loss": 1.5}) + "\n")
        f.write(json.dumps({"event": "best", "step": 10}) + "\n")
    return str(out / "best")


def fake_cache(cfg, teacher_dirs):
    _note(cfg, "cache " + ",".join(f"{k}={Path(v).parent.name}" for k, v in sorted(teacher_dirs.items())))
    return str(Path(cfg.run_dir) / "cache")


def fake_student(cfg, teacher_dirs, cache_dir):
    _note(cfg, f"student {len(teacher_dirs)} {Path(cache_dir).name if cache_dir else None}")
    return str(Path(cfg.run_dir) / "student" / "best")


def fake_evaluate(cfg, checkpoint_dir):
    _note(cfg, f"evaluate {Path(checkpoint_dir).parent.name}")
    return {"metrics": {"overall": {"ua": 0.5, "wa": 0.625}, "mean_ua": 0.5}, "predictions": {"y_true": [0, 1]}}


RECIPES = {
    "shards": fake_prepare,
    "teachers": fake_teacher,
    "cache": fake_cache,
    "student": fake_student,
    "evaluate": fake_evaluate,
}


def calls(run_dir: Path) -> list[str]:
    p = run_dir / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def small_cfg(**changes) -> Config:
    cfg = Config(name="t", languages=["en", "fi", "fr"])
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


# ------------------------------------------------------------------------------------------ the graph


def test_graph_stages_order_and_inputs(tmp_path):
    cfg = small_cfg()
    names = [(s.name, s.items, s.after) for s in build_graph(cfg, tmp_path)]
    assert names == [
        ("teachers", ("en", "fi", "fr"), ()),
        ("cache", (), ("teachers",)),
        ("student", (), ("teachers", "cache")),
        ("evaluate", (), ("student",)),
    ]
    cfg.distill.use_cache = False  # students that run the teachers themselves need no cache stage
    assert [s.name for s in build_graph(cfg, tmp_path)] == ["teachers", "student", "evaluate"]
    assert build_graph(cfg, tmp_path)[1].after == ("teachers",)


def test_graph_shards_only_when_synthesizing_missing_data(tmp_path):
    cfg = small_cfg(synth={"speakers_per_language": 2})
    stages = build_graph(cfg, tmp_path)
    assert stages[0].name == "shards" and stages[1].after == ("shards",)
    for split in ("train", "dev", "test"):  # data already there (made by hand): no shards stage
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "shard-000000.tar").write_bytes(b"")
    assert build_graph(cfg, tmp_path)[0].name == "teachers"
    assert build_graph(small_cfg(), tmp_path)[0].name == "teachers"  # no synth section: never


def test_stage_resources_default_alias_and_errors():
    cfg = small_cfg()
    cfg.launch.resources = {
        "default": {"partition": "gpu", "account": "lab", "time_min": 30},
        "teacher": {"gpus": 1, "cpus": 8, "mem_gb": 32},  # alias used by built-in configs
        "student": {"gpus": 4, "time_min": 600, "setup": ["module load cuda"]},
    }
    t = stage_resources(cfg, "teachers")
    assert (t.gpus, t.cpus, t.mem_gb, t.partition, t.account, t.time_min) == (1, 8, 32.0, "gpu", "lab", 30)
    s = stage_resources(cfg, "student")
    assert (s.gpus, s.time_min, s.setup, s.partition) == (4, 600, ["module load cuda"], "gpu")
    assert stage_resources(cfg, "evaluate") == StageResources(partition="gpu", account="lab", time_min=30)
    cfg.launch.resources["techers"] = {"gpus": 1}
    with pytest.raises(ConfigError, match="launch.resources.techers: unknown stage"):
        stage_resources(cfg, "teachers")
    cfg.launch.resources = {"teachers": {"gpu": 1}}
    with pytest.raises(ConfigError, match=r"launch.resources.teachers: unknown key 'gpu' \(did you mean 'gpus'\?\)"):
        stage_resources(cfg, "teachers")


def test_executor_kind_is_never_auto_picked(tmp_path):
    # submitit's AutoExecutor would pick SLURM whenever sbatch is on PATH; the kind must be the one asked for
    ex = make_executor("local", tmp_path / "%j", StageResources(cpus=2, time_min=5), "x")
    assert ex.cluster == "local"
    assert make_executor("debug", tmp_path / "%j", StageResources(), "x").cluster == "debug"
    with pytest.raises(ConfigError, match="executor must be one of"):
        make_executor("auto", tmp_path, StageResources(), "x")


@pytest.mark.skipif(shutil.which("srun") is None, reason="needs srun on PATH to build a SLURM executor")
def test_slurm_executor_maps_stage_resources(tmp_path):
    res = StageResources(
        gpus=2,
        cpus=6,
        mem_gb=16,
        time_min=120,
        nodes=2,
        tasks_per_node=2,
        partition="gpu",
        account="lab",
        qos="high",
        constraint="a100",
        setup=["module load cuda/12"],
    )
    ex = make_executor("slurm", tmp_path / "%j", res, "t-student", dependency="afterok:41:42")
    text = ex._executor._make_submission_file_text("CMD", "uid")
    for flag in (
        "--gpus-per-node=2",
        "--cpus-per-task=6",
        "--mem=16GB",
        "--time=120",
        "--nodes=2",
        "--ntasks-per-node=2",
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--constraint=a100",
        "--dependency=afterok:41:42",
        "--job-name=t-student",
        "--requeue",
        "--signal=USR2@90",
    ):
        assert f"#SBATCH {flag}\n" in text, flag
    assert "module load cuda/12" in text and "export PYTHONPATH=" in text
    cpu_only = make_executor("slurm", tmp_path / "%j", StageResources(time_min=1), "x")
    text = cpu_only._executor._make_submission_file_text("CMD", "uid")
    assert "gpus" not in text and "--signal=USR2@12" in text  # short jobs get a shorter warning


# ---------------------------------------------------------------------------------------- running it


def test_debug_executor_runs_the_graph_in_order(tmp_path):
    run = tmp_path / "run"
    summary = launch(small_cfg(synth={"x": 1}), run, executor="debug", recipes=RECIPES)
    assert calls(run) == [
        "shards",
        "teacher en",
        "teacher fi",
        "teacher fr",
        "cache en=en,fi=fi,fr=fr",
        "student 3 cache",
        "evaluate student",
    ]
    out = summary["outputs"]
    assert out["teachers"] == {l: str(run / "teachers" / l / "best") for l in ("en", "fi", "fr")}
    assert out["evaluate"] == {"metrics": {"overall": {"ua": 0.5, "wa": 0.625}, "mean_ua": 0.5}}  # no predictions
    assert summary["skipped"] == [] and len(summary["jobs"]["teachers"]) == 3
    state = json.loads((run / "stages" / "teachers" / "fi" / "state.json").read_text())
    assert state["state"] == "done" and state["attempts"] == 1 and state["executor"] == "debug"
    done = json.loads((run / "stages" / "student" / "done.json").read_text())
    assert done["output"] == str(run / "student" / "best") and len(done["config_hash"]) == 12
    assert (run / "config.yaml").exists() and (run / "stages" / "graph.json").exists()


def test_relaunch_skips_done_units_and_resumes_after_failure(tmp_path, capsys):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "FAIL_fi").write_text("")
    with pytest.raises(LaunchError, match=r"stage teachers\[fi\] failed .*teacher fi diverged"):
        launch(small_cfg(), run, executor="debug", recipes=RECIPES)
    rows = {(r["stage"], r["item"]): r for r in stage_status(run)}
    assert rows[("teachers", "en")]["state"] == "done"
    assert rows[("teachers", "fi")]["state"] == "failed"
    assert "RuntimeError: teacher fi diverged" in rows[("teachers", "fi")]["error"]
    assert rows[("teachers", "fr")]["state"] == "done"  # independent of the failure: it still ran
    assert rows[("cache", None)]["state"] == "not started"  # needs fi
    print_status(list(rows.values()), run_dir=run)
    assert "teacher fi diverged" in capsys.readouterr().out

    (run / "FAIL_fi").unlink()
    summary = launch(small_cfg(), run, executor="debug", recipes=RECIPES)
    assert calls(run).count("teacher en") == 1  # finished before: not run again
    assert calls(run)[-4:] == ["teacher fi", "cache en=en,fi=fi,fr=fr", "student 3 cache", "evaluate student"]
    assert len(summary["jobs"]["teachers"]) == 1
    fi = json.loads((run / "stages" / "teachers" / "fi" / "state.json").read_text())
    assert fi["state"] == "done" and fi["attempts"] == 2 and fi["error"] is None

    again = launch(small_cfg(), run, executor="debug", recipes=RECIPES)  # everything done: nothing runs
    assert again["jobs"] == {} and again["skipped"] == ["teachers", "cache", "student", "evaluate"]
    assert len(calls(run)) == 6  # en, fi, fr, cache, student, evaluate: each once


def test_relaunch_with_a_changed_config_is_refused_before_anything_runs_unless_asked(tmp_path, caplog):
    """Each unit records the settings that change its result; a relaunch compares them for every unit before it
    submits anything: refused with the differences, --restart redoes the changed units (a student's change
    leaves the teachers alone), --resume-changed keeps them."""
    from lakd.config.diff import ConfigChanged

    run = tmp_path / "run"
    launch(small_cfg(languages=["en"]), run, executor="debug", recipes=RECIPES)
    done = json.loads((unit_dir(run, "student") / "done.json").read_text())
    assert done["settings"]["student_optim.lr"] == 3e-4 and "launch.executor" not in done["settings"]
    cfg = small_cfg(languages=["en"])
    cfg.launch.resources = {"student": {"time_min": 5}}  # launch settings do not change results
    cfg.data.num_workers = 3
    assert launch(cfg, run, executor="debug", recipes=RECIPES)["jobs"] == {}

    cfg.student_optim.lr = 1e-5
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigChanged, match=(
        rf"^{run} \(student, evaluate\) was started with other settings: student_optim.lr: 0.0003 → 1e-05\. "
        r"Rerun with --restart"
    )):  # fmt: skip
        launch(cfg, run, executor="debug", recipes=RECIPES)
    assert (run / "config.yaml").read_text() == config_before  # refused before anything was written

    with caplog.at_level("WARNING", logger="lakd.launch"):
        kept = launch(cfg.copy(on_config_change="resume"), run, executor="debug", recipes=RECIPES)
    assert kept["jobs"] == {} and "student: config changed (student_optim.lr: 0.0003 → 1e-05): kept" in caplog.text

    redone = launch(cfg.copy(on_config_change="restart"), run, executor="debug", recipes=RECIPES)
    assert set(redone["jobs"]) == {"student", "evaluate"}  # the teachers' and the cache's settings did not change
    assert calls(run).count("teacher en") == 1 and calls(run).count("student 1 cache") == 2
    assert launch(cfg, run, executor="debug", recipes=RECIPES)["jobs"] == {}  # now recorded: the same run

    bad = small_cfg(languages=["en"])
    bad.data.batch_size = 0  # every unit's config is checked before anything is submitted
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer >= 1, got 0"):
        launch(bad, tmp_path / "other", executor="debug", recipes=RECIPES)
    assert not (tmp_path / "other").exists()


def test_local_executor_runs_jobs_as_subprocesses(tmp_path):
    run = tmp_path / "run"
    cfg = small_cfg(languages=["en", "fi"])
    cfg.distill.use_cache = False
    summary = launch(cfg, run, executor="local", recipes=RECIPES)
    assert calls(run) == ["teacher en", "teacher fi", "student 2 None", "evaluate student"]
    rows = stage_status(run)
    assert [r["state"] for r in rows] == ["done"] * 4
    for r in rows:
        assert r["job_id"].isdigit() and int(r["job_id"]) != os.getpid()  # a process of its own
        assert Path(r["stdout"]).exists() and Path(r["stderr"]).exists()
    assert rows[0]["metric"] == {"step": 10, "dev_ua": 0.45, "loss": 1.5}  # last record that is not an event
    assert rows[0]["metric_text"].startswith("step=10 dev_ua=0.45")
    assert set(rows[-1]["metric_text"].split()) == {"test_ua=0.5", "test_wa=0.625", "test_mean_ua=0.5"}
    assert summary["outputs"]["student"] == str(run / "student" / "best")


def test_local_executor_failure_names_stage_and_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "FAIL_en").write_text("")
    with pytest.raises(
        LaunchError,
        match=r"teachers\[en\] failed \(job \d+\): RuntimeError: teacher en diverged "
        r"\(log: .*_log.err\)",
    ):
        launch(small_cfg(languages=["en"]), run, executor="local", recipes=RECIPES)
    st = json.loads((unit_dir(run, "teachers", "en") / "state.json").read_text())
    assert st["state"] == "failed" and "Traceback" in st["traceback"]


def test_no_wait_needs_slurm(tmp_path):
    with pytest.raises(ValueError, match="wait=False needs the slurm executor"):
        launch(small_cfg(), tmp_path, executor="local", wait=False, recipes=RECIPES)


def test_checkpoint_marks_requeued_and_resubmits_the_same_task(tmp_path):
    cfg = small_cfg(run_dir=str(tmp_path))
    task = StageTask("teachers", "en", fake_teacher, cfg, str(tmp_path))
    delayed = task.checkpoint()  # what submitit calls on preemption / time-out
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function is task
    st = json.loads((unit_dir(tmp_path, "teachers", "en") / "state.json").read_text())
    assert st["state"] == "pending" and st["requeues"] == 1
    assert delayed.result() == str(tmp_path / "teachers" / "en" / "best")  # the requeued run
    st = json.loads((unit_dir(tmp_path, "teachers", "en") / "state.json").read_text())
    assert st["state"] == "done" and st["requeues"] == 1 and st["attempts"] == 1
    assert task() == str(tmp_path / "teachers" / "en" / "best") and calls(tmp_path) == ["teacher en"]


def test_checkpoint_signal_reaches_the_training_loop_and_the_job_resumes(tmp_path):
    """Locally, as on SLURM: the checkpoint signal (USR2) makes the loop save and stop; the job is requeued
    (the local executor restarts it) and continues at the exact step."""
    cfg = small_cfg(run_dir=str(tmp_path))
    ex = make_executor("local", tmp_path / "logs" / "%j", StageResources(time_min=5), "t")
    job = ex.submit(StageTask("teachers", "en", counting_training_loop, cfg, str(tmp_path)))
    steps = tmp_path / "counter" / "steps"
    t0 = time.time()
    while not (steps.exists() and len(steps.read_text().split()) >= 5):
        assert time.time() - t0 < 60, "the job did not start counting"
        time.sleep(0.1)
    pid = json.loads((unit_dir(tmp_path, "teachers", "en") / "state.json").read_text())["pid"]
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends before the time limit (--signal=USR2@N)
    assert job.result() == "counted 30"
    assert [int(x) for x in steps.read_text().split()] == list(range(1, 31))  # no step lost or repeated
    starts = [int(x) for x in (tmp_path / "counter" / "starts").read_text().split()]
    assert len(starts) == 2 and starts[0] == 0 and 5 <= starts[1] < 30
    st = json.loads((unit_dir(tmp_path, "teachers", "en") / "state.json").read_text())
    assert st["state"] == "done" and st["requeues"] == 1 and st["attempts"] == 2


def test_last_metrics_keeps_the_latest_dev_values_and_skips_a_torn_line(tmp_path):
    from lakd.launch.status import format_metrics, last_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text(
        '{"step": 10, "train/loss": 1.2}\n{"step": 20, "dev/ua": 0.55, "dev/wa": 0.6}\n'
        '{"event": "best", "step": 20}\n{"step": 30, "train/loss": 0.9}\n{"step": 40, "train/lo'
    )
    m = last_metrics(p)
    assert m == {"step": 30, "train/loss": 0.9, "dev/ua": 0.55, "dev/wa": 0.6}
    assert format_metrics(m) == "step=30 dev/ua=0.55 dev/wa=0.6 train/loss=0.9"
    assert last_metrics(tmp_path / "missing.jsonl") is None


def test_progress_gives_step_of_total_and_an_eta_from_the_latest_start(tmp_path):
    from lakd.launch.status import format_metrics, last_metrics

    def write(name, records):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        return tmp_path / name

    start = {"event": "start", "time": 0.0, "total_steps": 200, "step": 0}
    steps = [{"step": s, "time": 2.0 * s, "train/loss": 1.0} for s in range(10, 101, 10)]  # 2 s a step
    long_run = write("long.jsonl", [start] + steps)
    m = last_metrics(long_run, tail_bytes=120)  # the start event is only in the file's first line
    assert m["_progress"]["total_steps"] == 200 and m["_progress"]["seconds_per_step"] == pytest.approx(2.0)
    assert format_metrics(m) == "step 100/200 (50%) ETA 0:03:20 train/loss=1"
    # a resumed run: its own start event and rate count, not the killed run's
    resumed = write(
        "resumed.jsonl", [start] + steps + [dict(start, time=5000.0, step=100), {"step": 110, "time": 5010.0}]
    )
    assert format_metrics(last_metrics(resumed)) == "step 110/200 (55%) ETA 0:01:30"


def test_status_of_a_run_that_was_never_launched(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stages/ directory"):
        stage_status(tmp_path)


def test_the_launcher_recognises_preemption_without_importing_torch():
    """The driver (`lakd launch`, `lakd status`) imports the launcher, Preempted and its exit code, never torch."""
    code = (
        "import sys, lakd.launch\n"
        "from lakd.train.preemption import EXIT_PREEMPTED, Preempted\n"
        "assert EXIT_PREEMPTED == 75 and Preempted(3, 'ckpt', 'SIGUSR1').exit_code == EXIT_PREEMPTED\n"
        "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- the SLURM entry scripts

REPO = Path(__file__).resolve().parents[1]


def test_distill_sh_without_a_config_prints_usage():
    r = subprocess.run(["bash", str(REPO / "slurm" / "distill.sh")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage: sbatch slurm/distill.sh CONFIG" in r.stderr


def test_local_cluster_sh_tells_a_non_root_user_how_to_run_it():
    cmd = ["bash", str(REPO / "slurm" / "local-cluster.sh"), "start"]
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root and no runuser to drop privileges")
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "must run as root" in r.stderr and "sudo " in r.stderr and "local-cluster.sh start" in r.stderr


def test_scripts_are_valid_bash():
    for name in ("local-cluster.sh", "distill.sh", "tune.sh"):
        r = subprocess.run(["bash", "-n", str(REPO / "slurm" / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)
