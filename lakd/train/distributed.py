"""Distributed init that works the same under srun, torchrun and a plain `python` (one process).

`init_distributed()` figures out who launched us, exports the torch.distributed variables (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) so that DeepSpeed and submitit-style code find them too (DeepSpeed
otherwise falls back to MPI discovery and fails without mpi4py), picks the device and initialises the process
group (gloo on CPU, NCCL on CUDA) when there is more than one process.

Launchers, in order of precedence:
- **torchrun** (or anything that sets RANK and WORLD_SIZE): used as is.
- **srun**: a task of a job step (srun sets SLURM_STEP_NUM_TASKS): SLURM_PROCID -> RANK, SLURM_LOCALID ->
  LOCAL_RANK, SLURM_STEP_NUM_TASKS -> WORLD_SIZE, MASTER_ADDR = first host of SLURM_STEP_NODELIST (else
  SLURM_JOB_NODELIST), MASTER_PORT = 10000 + SLURM_JOB_ID % 20000 (same on every task, differs between
  concurrent jobs; a free port for a one-task step). Existing MASTER_* win.
- **single**: RANK=0, WORLD_SIZE=1, MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port. Also the batch script
  of a job itself (python run without srun, as the driver of slurm/tune.sh is): it has SLURM_PROCID=0 and the
  job's SLURM_NTASKS, but it is one process. Taking SLURM_NTASKS as the world size made
  `sbatch --nodes 2 --ntasks-per-node 1 --wrap "lakd train teacher ..."` wait for a rank 1 that never starts.

The exported variables are inherited by every process started afterwards - a SLURM job submitted from a
process that trained something in-process gets RANK=0 WORLD_SIZE=1 MASTER_PORT=<ours>, and every task of a
2-node job then took itself for a lone torchrun process. So `init_distributed` also exports LAKD_DIST_EXPORTS
(its pid and the values), and another process that finds exactly those values ignores them
(`inherited_exports`); a launcher that set its own values (torchrun started from a lakd process) differs.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    is_main: bool
    backend: str | None = None  # None when no process group was created (one process)
    launcher: str = "single"  # torchrun | slurm | single

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def single_process_info(device: str | torch.device = "cpu") -> DistInfo:
    """A DistInfo for code (tests, notebooks) that runs one process and never initialises a group."""
    return DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device(device), is_main=True)


# --------------------------------------------------------------------------------------------- SLURM

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in SLURM node list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in SLURM node list {text!r}")
    parts.append("".join(cur))
    return [p for p in parts if p]


def _expand_bracket(body: str, where: str) -> list[str]:
    out = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise ValueError(f"cannot parse range {item!r} in SLURM node list {where!r}")
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in SLURM node list {where!r}")
        width = len(lo)  # zero padding of the first number, as SLURM does
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def parse_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list: ``node[01-03],gpu5`` -> node01 node02 node03 gpu5; ``r[1-2]-n[1,3]`` -> 4 hosts.

    Pure Python (no `scontrol`), so it also works inside containers without SLURM tools.
    """
    hosts: list[str] = []
    for part in _split_top_level(nodelist.strip()):
        pieces = re.split(r"(\[[^\]]*\])", part)
        expanded = [""]
        for piece in pieces:
            if piece.startswith("["):
                options = _expand_bracket(piece[1:-1], nodelist)
            elif "[" in piece or "]" in piece:
                raise ValueError(f"cannot parse {part!r} in SLURM node list {nodelist!r}")
            else:
                options = [piece]
            expanded = [a + b for a in expanded for b in options]
        hosts += expanded
    if not hosts:
        raise ValueError(f"empty SLURM node list {nodelist!r}")
    return hosts


def first_slurm_host(nodelist: str) -> str:
    """First host of a node list; falls back to `scontrol show hostnames` for forms the parser rejects."""
    try:
        return parse_slurm_nodelist(nodelist)[0]
    except ValueError:
        if shutil.which("scontrol") is None:
            raise
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        if not out:
            raise ValueError(f"scontrol returned no hosts for node list {nodelist!r}") from None
        return out[0]


def slurm_master_port(job_id: str | int) -> int:
    return 10000 + int(str(job_id).split("_")[0]) % 20000


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXPORTED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
EXPORTS_MARK = "LAKD_DIST_EXPORTS"  # "<pid of the exporting process> RANK=..,LOCAL_RANK=..,..."


def _exports_signature(env: Mapping[str, str]) -> str:
    return ",".join(f"{k}={env.get(k, '')}" for k in EXPORTED)


def inherited_exports(env: Mapping[str, str], pid: int | None = None) -> bool:
    """Whether env's RANK/WORLD_SIZE/MASTER_* are what another process's `init_distributed` exported (and this
    process inherited: a child, a job submitted from it), not what a launcher set for this process."""
    mark = env.get(EXPORTS_MARK)
    if not mark:
        return False
    owner, _, values = mark.partition(" ")
    return owner != str(os.getpid() if pid is None else pid) and values == _exports_signature(env)


def launcher_env(env: Mapping[str, str], pid: int | None = None) -> dict[str, str]:
    """env without the variables another lakd process exported (see `inherited_exports`)."""
    if not inherited_exports(env, pid):
        return dict(env)
    return {k: v for k, v in env.items() if k not in (*EXPORTED, "LAKD_LAUNCHER", EXPORTS_MARK)}


def announced_rank(env: Mapping[str, str] | None = None, pid: int | None = None) -> int:
    """The global rank the launcher gave this process (torchrun's RANK, srun's SLURM_PROCID), before any
    process group exists; 0 for a single process and for a batch script. Inherited exports do not count."""
    env = launcher_env(os.environ if env is None else env, pid)
    launcher = detect_launcher(env)
    if launcher == "torchrun":
        return int(env["RANK"])
    if launcher == "slurm":
        return int(env["SLURM_PROCID"])
    return 0


def detect_launcher(env: Mapping[str, str]) -> str:
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    # only srun's tasks are ranks: a batch script has SLURM_PROCID=0 and SLURM_NTASKS too, but no step
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        return "slurm"
    return "single"


def distributed_env(env: Mapping[str, str], pid: int | None = None) -> tuple[str, dict[str, str]]:
    """(launcher, the RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT values to export) for an environment.

    Variables another process exported (`inherited_exports`; `pid` = this process, default os.getpid()) are
    ignored."""
    env = launcher_env(env, pid)
    launcher = detect_launcher(env)
    if launcher == "torchrun":
        out = {"RANK": env["RANK"], "WORLD_SIZE": env["WORLD_SIZE"], "LOCAL_RANK": env.get("LOCAL_RANK", "0")}
        out["MASTER_ADDR"] = env.get("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" in env:
            out["MASTER_PORT"] = env["MASTER_PORT"]
        elif int(env["WORLD_SIZE"]) == 1:
            out["MASTER_PORT"] = str(find_free_port())
        else:
            raise RuntimeError("RANK/WORLD_SIZE are set for several processes but MASTER_PORT is not")
        return launcher, out
    if launcher == "slurm":
        world = env["SLURM_STEP_NUM_TASKS"]
        out = {"RANK": env["SLURM_PROCID"], "LOCAL_RANK": env.get("SLURM_LOCALID", "0"), "WORLD_SIZE": world}
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if "MASTER_ADDR" in env:
            out["MASTER_ADDR"] = env["MASTER_ADDR"]
        elif nodelist:
            out["MASTER_ADDR"] = first_slurm_host(nodelist)
        elif int(world) == 1:
            out["MASTER_ADDR"] = "127.0.0.1"
        else:
            raise RuntimeError("SLURM task without SLURM_JOB_NODELIST: cannot find the master host")
        if "MASTER_PORT" in env:
            out["MASTER_PORT"] = env["MASTER_PORT"]
        elif "SLURM_JOB_ID" in env and int(world) > 1:
            out["MASTER_PORT"] = str(slurm_master_port(env["SLURM_JOB_ID"]))
        else:  # one task: no other rank must agree on it, and the job's port would be the same for every
            # one-task step of the job on this node (Ray Tune's trials under slurm/tune.sh; DeepSpeed binds it)
            out["MASTER_PORT"] = str(find_free_port())
        return launcher, out
    return launcher, {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1"),
        "MASTER_PORT": env.get("MASTER_PORT") or str(find_free_port()),
    }


# ------------------------------------------------------------------------------------------------ init


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise RuntimeError("device 'cuda' requested but torch sees no GPU")
        return torch.device("cuda", local_rank % n)
    return torch.device(device)


def init_distributed(
    backend: str | None = None,
    device: str | torch.device = "auto",
    timeout_min: float = 30.0,
    environ: MutableMapping[str, str] | None = None,
) -> DistInfo:
    """Read the launcher's environment, export torch.distributed variables, init the process group.

    Idempotent: a second call returns the same DistInfo without re-initialising. `backend` defaults to
    NCCL when the device is CUDA, gloo otherwise. With one process no group is created (DeepSpeed creates
    its own single-member group from the exported variables).
    """
    env = os.environ if environ is None else environ
    if inherited_exports(env):  # another process's values (we are its child, or a job it submitted)
        for k in (*EXPORTED, "LAKD_LAUNCHER", EXPORTS_MARK):
            env.pop(k, None)
    launcher, values = distributed_env(env)
    launcher = env.get("LAKD_LAUNCHER", launcher)  # a repeated call sees our own exports: keep the first answer
    for k, v in values.items():
        env[k] = v
    env["LAKD_LAUNCHER"] = launcher
    env[EXPORTS_MARK] = f"{os.getpid()} {_exports_signature(env)}"
    rank, local_rank, world = int(values["RANK"]), int(values["LOCAL_RANK"]), int(values["WORLD_SIZE"])
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    chosen = None
    if world > 1:
        if tdist.is_initialized():
            chosen = tdist.get_backend()
        else:
            chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
            kwargs: dict[str, Any] = {}
            if chosen == "nccl":
                kwargs["device_id"] = dev
            tdist.init_process_group(
                backend=chosen,
                init_method="env://",
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(minutes=timeout_min),
                **kwargs,
            )
    return DistInfo(
        rank=rank,
        local_rank=local_rank,
        world_size=world,
        device=dev,
        is_main=rank == 0,
        backend=chosen,
        launcher=launcher,
    )


def cleanup() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


# --------------------------------------------------------------------------------------------- helpers


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def get_rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def _collective_device() -> torch.device:
    if is_distributed() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_tensor(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce a copy of `t` (sum | mean | max | min); identity with one process."""
    if not is_distributed():
        return t.clone()
    dev = _collective_device()
    x = t.detach().to(dev, dtype=torch.float64 if t.is_floating_point() else t.dtype).clone()
    red = {"sum": tdist.ReduceOp.SUM, "mean": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "min": tdist.ReduceOp.MIN}[
        op
    ]
    tdist.all_reduce(x, op=red)
    if op == "mean":
        x = x / tdist.get_world_size()
    return x.to(t.device, dtype=t.dtype)


def all_reduce_sum(value: float) -> float:
    return float(all_reduce_tensor(torch.tensor([float(value)], dtype=torch.float64), "sum")[0])


def all_reduce_mean(value: float) -> float:
    return float(all_reduce_tensor(torch.tensor([float(value)], dtype=torch.float64), "mean")[0])


def all_reduce_max(value: float) -> float:
    return float(all_reduce_tensor(torch.tensor([float(value)], dtype=torch.float64), "max")[0])


def all_reduce_dict(values: Mapping[str, float], op: str = "mean") -> dict[str, float]:
    """Reduce several scalars in one collective; every rank must pass the same keys."""
    keys = sorted(values)
    if not keys:
        return {}
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    return dict(zip(keys, all_reduce_tensor(t, op).tolist()))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank (pickled)."""
    if not is_distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src, device=_collective_device() if tdist.get_backend() == "nccl" else None)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's object, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out
