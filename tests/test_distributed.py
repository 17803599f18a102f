"""Distributed init: SLURM node-list parsing, launcher env mapping, and real 2-process gloo collectives
under torchrun and under SLURM-style variables (what srun sets), without a SLURM controller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lakd.train.distributed import (
    detect_launcher,
    distributed_env,
    find_free_port,
    init_distributed,
    parse_slurm_nodelist,
    slurm_master_port,
)

REPO = Path(__file__).resolve().parents[1]
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LAKD_LAUNCHER")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("node5", ["node5"]),
        ("node[01-03],node5", ["node01", "node02", "node03", "node5"]),
        ("gpu[1,3-4]", ["gpu1", "gpu3", "gpu4"]),
        ("rack[1-2]-n[08-09]", ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]),
        ("a[9-11],b", ["a9", "a10", "a11", "b"]),
        ("cn-[001-002].cluster", ["cn-001.cluster", "cn-002.cluster"]),
    ],
)
def test_parse_slurm_nodelist(text, expected):
    assert parse_slurm_nodelist(text) == expected


@pytest.mark.parametrize("bad", ["node[01-03", "node]1[", "node[a-b]", "node[5-3]", ""])
def test_parse_slurm_nodelist_rejects_garbage(bad):
    with pytest.raises(ValueError, match="node list"):
        parse_slurm_nodelist(bad)


def test_env_mapping_slurm():
    env = {
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
    }
    launcher, v = distributed_env(env)
    assert launcher == "slurm"
    assert v == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(10000 + 123456 % 20000),
    }
    assert slurm_master_port("123456_7") == slurm_master_port(123456)  # array task ids share the job's port
    # explicit MASTER_* win; step node list (srun inside an allocation) wins over the job's
    _, v = distributed_env({**env, "SLURM_STEP_NODELIST": "gpu08", "MASTER_PORT": "29999"})
    assert v["MASTER_ADDR"] == "gpu08" and v["MASTER_PORT"] == "29999"


def test_env_mapping_torchrun_wins_and_single_defaults():
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
    }
    assert detect_launcher(env) == "torchrun"
    assert distributed_env(env)[1] == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    launcher, v = distributed_env({})
    assert launcher == "single" and v["RANK"] == "0" and v["WORLD_SIZE"] == "1" and v["MASTER_ADDR"] == "127.0.0.1"
    assert 0 < int(v["MASTER_PORT"]) < 65536
    with pytest.raises(RuntimeError, match="MASTER_PORT"):
        distributed_env({"RANK": "0", "WORLD_SIZE": "2"})


def test_init_single_process_exports_variables_without_a_group():
    env: dict[str, str] = {}
    info = init_distributed(device="cpu", environ=env)
    assert (info.rank, info.world_size, info.is_main, info.launcher, info.backend) == (0, 1, True, "single", None)
    assert info.device == torch.device("cpu")
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1" and env["MASTER_ADDR"] == "127.0.0.1"
    port = env["MASTER_PORT"]
    again = init_distributed(device="cpu", environ=env)  # idempotent, same answer
    assert again == info and env["MASTER_PORT"] == port
    assert not torch.distributed.is_initialized()


WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import torch
    from lakd.train import distributed as D

    info = D.init_distributed(device="cpu")
    out = {{"rank": info.rank, "world": info.world_size, "local_rank": info.local_rank, "backend": info.backend,
           "launcher": info.launcher, "sum": D.all_reduce_sum(info.rank + 1), "mean": D.all_reduce_mean(info.rank),
           "max": D.all_reduce_max(10 * info.rank), "dict": D.all_reduce_dict({{"a": info.rank, "b": 2.0}}),
           "gathered": D.all_gather_object(f"r{{info.rank}}"),
           "broadcast": D.broadcast_object({{"from": info.rank}}), "main": D.is_main()}}
    D.barrier()
    D.cleanup()
    json.dump(out, open({result!r}.format(info.rank), "w"))
""")


def _free_port_in(lo: int, hi: int) -> int:
    import random
    import socket

    for port in random.Random(os.getpid()).sample(range(lo, hi), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip(f"no free port in {lo}..{hi}")


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def _communicate(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("distributed workers timed out")
    return outs


def _check_results(tmp_path: Path, launcher: str, local_ranks=(0, 1)) -> None:
    r = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    for i, x in enumerate(r):
        assert x["rank"] == i and x["world"] == 2 and x["backend"] == "gloo" and x["launcher"] == launcher
        assert x["local_rank"] == local_ranks[i]
        assert x["sum"] == 3.0 and x["mean"] == 0.5 and x["max"] == 10.0
        assert x["dict"] == {"a": 0.5, "b": 2.0}
        assert x["gathered"] == ["r0", "r1"] and x["broadcast"] == {"from": 0}
        assert x["main"] == (i == 0)


def test_two_processes_under_torchrun_all_reduce(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), result=str(tmp_path / "out{}.json")))
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(find_free_port()),
        str(script),
    ]
    p = subprocess.Popen(
        cmd,
        env=_clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = _communicate([p], 120)[0]
    assert p.returncode == 0, out[-4000:]
    _check_results(tmp_path, "torchrun")


def test_two_processes_with_srun_variables_all_reduce(tmp_path):
    """Exactly the variables srun gives two tasks on one node; master port derived from the job id."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), result=str(tmp_path / "out{}.json")))
    port = _free_port_in(10000, 30000)  # the range job-id ports live in
    job_id = 7 * 20000 + (port - 10000)  # so that 10000 + job_id % 20000 == port
    assert slurm_master_port(job_id) == port
    procs = []
    for rank in range(2):
        env = _clean_env()
        env.update(
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NTASKS="2",
            SLURM_STEP_NUM_TASKS="2",
            SLURM_JOB_NODELIST="localhost",
            SLURM_JOB_ID=str(job_id),
            SLURM_NNODES="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    outs = _communicate(procs, 120)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    _check_results(tmp_path, "slurm")
