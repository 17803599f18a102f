"""Two SLURM nodes on one machine: what the single-node cluster cannot show.

`slurm/local-cluster.sh start --nodes 2` adds a partition `multi` of two nodes, lakd1 and lakd2, each a slurmd in
its own network namespace (10.77.0.11 and .12 on a bridge) and UTS namespace (its own hostname); the default
partition keeps the machine's own node. On it:

- one job over both nodes: what lakd.train.distributed derives from SLURM's variables in each srun task (rank,
  world size, MASTER_ADDR = lakd1 from the node list `lakd[1-2]`, one port), also when the job inherited the
  variables a lakd process exports (the submitting process had trained something in-process); and in the batch
  script itself, which SLURM gives SLURM_NTASKS=2 but is one process;
- `lakd train teacher` as a 2-node x 1-process job (srun), DDP over gloo and DeepSpeed ZeRO-2: the ranks ran on
  two hostnames, found the first node as master, and hold identical parameters after training;
- `sbatch slurm/tune.sh` over both nodes: a Ray head on lakd1, a worker on lakd2, trials on both (the hostname
  Ray Tune records in every trial's result.json), the search's results and its test evaluation (by the driver,
  in the batch script), no Ray process left after the job.

The module fixture starts the 2-node mode when it is not up (as root) and returns the cluster to the single-node
default afterwards, so the other SLURM tests see the cluster they expect. Skipped with the reason when that is
not possible; LAKD_REQUIRE_SLURM=1 (CI) makes that a failure. The first two tests need no cluster: the same
logic on hand-made environments.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakd.train.distributed import (
    EXPORTS_MARK,
    announced_rank,
    distributed_env,
    inherited_exports,
    init_distributed,
)

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local-cluster.sh"
PARTITION = "multi"
NODES = ["lakd1", "lakd2"]
IPS = {"lakd1": "10.77.0.11", "lakd2": "10.77.0.12"}
PY = sys.executable
# lakd.train.distributed.EXPORTED, LAKD_LAUNCHER and its mark: what a lakd process that ran init_distributed leaves
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER", "LAKD_DIST_EXPORTS")
TINY = [
    "synth.speakers_per_language=3",
    "synth.utterances_per_speaker=8",
    "synth.splits={train: 1, dev: 1, test: 1}",
    "teacher_optim.epochs=1",
    "student_optim.epochs=1",
    "threads=1",
]


# ---------------------------------------------------------- without a cluster: what the srun tasks below rely on


def test_a_batch_script_is_one_process_and_srun_tasks_are_ranks():
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "lakd[1-2]"}
    launcher, v = distributed_env(batch)  # `sbatch --nodes 2 --ntasks-per-node 1` runs its script once
    assert (launcher, v["RANK"], v["WORLD_SIZE"], v["MASTER_ADDR"]) == ("single", "0", "1", "127.0.0.1")
    task = {**batch, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "lakd[1-2]"}
    launcher, v = distributed_env(task)
    assert (launcher, v["RANK"], v["WORLD_SIZE"], v["MASTER_ADDR"], v["MASTER_PORT"]) == (
        "slurm",
        "1",
        "2",
        "lakd1",
        "10007",
    )
    assert announced_rank(task) == 1 and announced_rank(batch) == 0
    # a one-task step (a Ray worker's trials) needs no agreed port: a free one, not the job's for every trial
    one = {**task, "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NODELIST": "lakd1"}
    assert distributed_env(one)[1]["MASTER_PORT"] != "10007"


def test_exports_of_another_lakd_process_are_ignored():
    """What a lakd process exports (init_distributed) reaches the jobs it submits: srun's ranks still count."""
    parent: dict[str, str] = {}
    init_distributed(device="cpu", environ=parent)  # single process: RANK=0 WORLD_SIZE=1 MASTER_PORT=<free>
    srun = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "lakd[1-2]", "SLURM_JOB_ID": "7"}
    child, other = {**parent, **srun}, os.getpid() + 1
    assert inherited_exports(child, pid=other) and not inherited_exports(child)  # ours in the exporting process
    launcher, v = distributed_env(child, pid=other)
    assert (launcher, v["RANK"], v["WORLD_SIZE"], v["MASTER_ADDR"]) == ("slurm", "1", "2", "lakd1")
    assert announced_rank(child, pid=other) == 1
    # a launcher that set its own values (torchrun started by a lakd process) is believed
    torchrun = {**child, "RANK": "3", "WORLD_SIZE": "4", "MASTER_PORT": "29500"}
    assert not inherited_exports(torchrun, pid=other)
    assert distributed_env(torchrun, pid=other)[1]["RANK"] == "3"
    # init_distributed drops them (LAKD_LAUNCHER too) and marks its own
    foreign = {**parent, EXPORTS_MARK: parent[EXPORTS_MARK].replace(f"{os.getpid()} ", f"{other} ", 1)}
    foreign["LAKD_LAUNCHER"] = "torchrun"
    info = init_distributed(device="cpu", environ=foreign)
    assert info.launcher == "single" and foreign[EXPORTS_MARK].startswith(f"{os.getpid()} ")


# ------------------------------------------------------------------------------------------------ the cluster


def usable_nodes() -> list[str]:
    """Nodes of partition `multi` that can run jobs now."""
    if shutil.which("sinfo") is None:
        return []
    r = subprocess.run(
        ["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %t"], capture_output=True, text=True, timeout=20
    )
    if r.returncode != 0:
        return []
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()]
    return sorted(n for n, st in rows if st.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc"))


def _unavailable(msg: str):
    msg += "; start it with: sudo slurm/local-cluster.sh start --nodes 2"
    if os.environ.get("LAKD_REQUIRE_SLURM") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def two_nodes():
    if usable_nodes() == NODES:
        yield NODES
        return
    if os.geteuid() != 0:
        _unavailable(f"no 2-node partition '{PARTITION}' and not root to start it")
    t0 = time.time()
    r = subprocess.run(["bash", str(CLUSTER), "start", "--nodes", "2"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"local-cluster.sh start --nodes 2 failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    assert usable_nodes() == NODES, r.stdout
    print(f"[two_nodes] 2-node mode up in {time.time() - t0:.1f} s")
    try:
        yield NODES
    finally:  # back to the single-node default (the other SLURM tests expect it)
        r = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"restoring the single-node cluster failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "multi" not in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout


def job_env(**extra: str) -> dict:
    """What jobs are submitted with (sbatch passes it on): the venv first on PATH, no torch.distributed variables
    that an in-process test of this session exported (lakd's run-dir lock reads RANK before init_distributed
    sees them; see test_ranks_and_master_over_two_nodes for what lakd.train.distributed makes of them)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PATH=f"{Path(PY).parent}:{env.get('PATH', '')}", OMP_NUM_THREADS="1", WANDB_MODE="offline", **extra)
    return env


def submit(cwd: Path, *args: str, env: dict | None = None) -> str:
    r = subprocess.run(
        ["sbatch", "--parsable", "-p", PARTITION, "--chdir", str(cwd), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or job_env(),
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def wait_job(job: str, timeout: float, log: Path) -> str:
    """The job's final state (squeue -t all knows it for MinJobAge after the end; no sacct lag)."""
    t0 = time.time()
    state = ""
    while time.time() - t0 < timeout:
        state = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        time.sleep(0.5)
    subprocess.run(["scancel", job], timeout=30)
    out = log.read_text()[-6000:] if log.exists() else "(no output)"
    raise AssertionError(f"job {job} still {state} after {timeout:.0f} s; its output:\n{out}")


# ------------------------------------------------------------------------- ranks, world size and master address

PROBE_ENV = """
import json, os, socket
from lakd.train.distributed import announced_rank, distributed_env
launcher, v = distributed_env(os.environ)
print("PROBE " + json.dumps({"host": socket.gethostname(), "node": os.environ.get("SLURMD_NODENAME"),
      "step": os.environ.get("SLURM_STEP_ID"), "launcher": launcher, "announced_rank": announced_rank(), **v,
      "master_ip": socket.gethostbyname(v["MASTER_ADDR"]), "own_ip": socket.gethostbyname(socket.gethostname())}))
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_ranks_and_master_over_two_nodes(two_nodes, tmp_path):
    """srun's tasks on lakd1 and lakd2 get ranks 0 and 1 of 2 and the master lakd1 (first of `lakd[1-2]`, whose
    address rank 1 resolves to lakd1's own), although the job inherited a lakd process's exports (RANK=0,
    WORLD_SIZE=1, ...); the batch script itself is one process (world size 1), although SLURM_NTASKS=2."""
    (tmp_path / "probe.py").write_text(PROBE_ENV)
    env = job_env()
    init_distributed(device="cpu", environ=env)  # exactly what a lakd process leaves for what it starts
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1" and "LAKD_DIST_EXPORTS" in env
    script = f"{PY} probe.py && srun {PY} probe.py"
    job = submit(tmp_path, "--nodes", "2", "--ntasks-per-node", "1", "-t", "2", "-o", "out", "--wrap", script, env=env)
    assert wait_job(job, 120, tmp_path / "out") == "COMPLETED", (tmp_path / "out").read_text()
    probes = [json.loads(line[6:]) for line in (tmp_path / "out").read_text().splitlines() if line.startswith("PROBE ")]
    assert len(probes) == 3, (tmp_path / "out").read_text()
    batch, tasks = probes[0], sorted(probes[1:], key=lambda p: int(p["RANK"]))
    assert batch["step"] is None and batch["host"] == "lakd1"
    assert (batch["launcher"], batch["WORLD_SIZE"], batch["announced_rank"]) == ("single", "1", 0)
    assert [t["host"] for t in tasks] == [t["node"] for t in tasks] == NODES  # rank 0 on the first node
    assert [t["own_ip"] for t in tasks] == [IPS[n] for n in NODES]  # two hosts, two addresses
    for rank, t in enumerate(tasks):
        assert (t["launcher"], t["RANK"], t["WORLD_SIZE"], t["LOCAL_RANK"]) == ("slurm", str(rank), "2", "0"), t
        assert t["announced_rank"] == rank, t
        assert t["MASTER_ADDR"] == "lakd1" and t["master_ip"] == IPS["lakd1"], t
    assert tasks[0]["MASTER_PORT"] == tasks[1]["MASTER_PORT"] == str(10000 + int(job) % 20000)


# ----------------------------------------------------------------------------- a teacher trained on two nodes

# Runs the real entry point (`lakd train teacher ...`, lakd.cli.main) with Trainer.fit wrapped: after training,
# every rank writes where it ran, what it was told, and a hash of its model's parameters.
PROBE_TRAIN = """
import hashlib, json, os, socket, sys
from lakd.train import engine

out_dir, fit = sys.argv[1], engine.Trainer.fit

def probed_fit(self):
    summary = fit(self)
    h = hashlib.sha256()
    for k, v in sorted(self.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    d = self.dist
    record = {"rank": d.rank, "world_size": d.world_size, "launcher": d.launcher, "backend": d.backend,
              "host": socket.gethostname(), "master_addr": os.environ["MASTER_ADDR"], "steps": summary["steps"],
              "deepspeed": self.use_deepspeed, "params": h.hexdigest()}
    with open(os.path.join(out_dir, f"rank{d.rank}.json"), "w") as f:
        json.dump(record, f)
    return summary

engine.Trainer.fit = probed_fit
from lakd.cli import main
sys.argv = ["lakd", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, list[str]]:
    """The tiny config's synthetic corpus (English only: one teacher), made once for the module."""
    from lakd.config import load_config
    from lakd.recipes import prepare

    run = tmp_path_factory.mktemp("two_nodes_data")
    overrides = [*TINY, "languages=[en]", "data.batch_size=2"]  # 8 training utterances: 2 steps of 2 per rank
    prepare.run(load_config("tiny", [*overrides, f"run_dir={run}"]))
    return run / "data", overrides


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ddp", "deepspeed"])
def test_teacher_trains_on_two_nodes(two_nodes, tiny_data, tmp_path, backend):
    data, overrides = tiny_data
    (tmp_path / "probe.py").write_text(PROBE_TRAIN)
    run = tmp_path / "run"
    args = ["train", "teacher", "--language", "en", "--config", "tiny", "--run-dir", str(run)]
    sets = [*overrides, "wandb.mode=disabled", *[f"data.{s}={data / s}" for s in ("train", "dev", "test")]]
    if backend == "deepspeed":
        sets += ["launch.deepspeed=true", "launch.zero_stage=2"]
    for s in sets:
        args += ["--set", s]
    cmd = shlex.join(["srun", PY, "probe.py", str(tmp_path), *args])
    job = submit(
        tmp_path, "--nodes", "2", "--ntasks-per-node", "1", "--mem", "2G", "-t", "5", "-o", "out", "--wrap", cmd
    )
    state = wait_job(job, 240, tmp_path / "out")
    assert state == "COMPLETED", (tmp_path / "out").read_text()[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["host"] for r in ranks] == NODES  # two hosts: rank 0 on the first node of the allocation
    for rank, r in enumerate(ranks):
        assert (r["rank"], r["world_size"], r["launcher"], r["backend"]) == (rank, 2, "slurm", "gloo"), r
        assert r["master_addr"] == "lakd1" and r["deepspeed"] == (backend == "deepspeed") and r["steps"] == 2, r
    assert ranks[0]["params"] == ranks[1]["params"]  # gradients were averaged across the nodes
    summary = json.loads((run / "teachers" / "en" / "summary.json").read_text())
    assert summary["world_size"] == 2 and (run / "teachers" / "en" / "best" / "lakd.json").exists()


# ------------------------------------------------------------------------------- Ray Tune across two nodes


@pytest.mark.slurm
@pytest.mark.slow
def test_tune_sh_runs_trials_on_both_nodes(two_nodes, tmp_path):
    """slurm/tune.sh on a 2-node allocation (1 CPU per node, so the two concurrent trials take one node each)."""
    run = tmp_path / "run"
    args = ["--config", "tiny", "--run-dir", str(run), "--num-samples", "2", "--algorithm", "random"]
    args += ["--scheduler", "fifo", "--seed", "0"]
    for s in [*TINY, "languages=[en,fi]", "data.batch_size=8", "wandb.mode=offline"]:
        args += ["--set", s]
    res = ["--nodes", "2", "--ntasks-per-node", "1", "--cpus-per-task", "1", "--mem-per-cpu", "3G", "-t", "10"]
    job = submit(tmp_path, *res, "-o", "tune.out", str(REPO / "slurm" / "tune.sh"), *args)
    out = tmp_path / "tune.out"
    state = wait_job(job, 420, out)
    assert state == "COMPLETED", out.read_text()[-8000:]
    log = out.read_text()
    assert f"job {job}: Ray head on lakd1 ({IPS['lakd1']}:" in log and "2 node(s): lakd1 lakd2" in log, log[:3000]
    summary = json.loads((run / "tune" / "search" / "summary.json").read_text())
    assert len(summary["trials"]) == 2 and summary["errors"] == 0, summary
    assert summary["test"] and "overall" in summary["test"]["results"]  # the driver's one test evaluation
    where = {}  # trial -> (hostname, node_ip) as Ray Tune records them in every result
    for result in (run / "tune" / "search").glob("trial_*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        assert rows, result
        where[result.parent.name] = {(r["hostname"], r["node_ip"]) for r in rows}
    assert len(where) == 2 and all(len(w) == 1 for w in where.values()), where
    assert sorted(next(iter(w)) for w in where.values()) == [(n, IPS[n]) for n in NODES], where
    # the Ray processes ended with the job (their command lines name the job's session directory)
    deadline = time.time() + 30
    while (left := _processes_naming(f"/ray-{job}/")) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, left
    shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)  # tune.sh's Ray session files (kept when a test fails)


def _processes_naming(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{proc.name}: {cmd[:200]}")
    return found
