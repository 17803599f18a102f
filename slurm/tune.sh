#!/bin/bash
# slurm/tune.sh - `lakd tune` (Ray Tune search of the student's hyper-parameters) across a SLURM allocation:
#     sbatch --nodes=4 --gpus-per-task=2 slurm/tune.sh --config my.yaml --num-samples 32 --gpus-per-trial 0.5
# Every argument goes to `lakd tune` (see docs/tuning.md). Submitting the same command again resumes the search
# of that --name (finished trials are kept), e.g. after the allocation's time ran out.
#
# One Ray node per SLURM node (one task per node owns all of that node's CPUs/GPUs, as in Ray's "Deploying on
# Slurm" guide): the head runs on the first node of the allocation (`srun -w <node> ray start --head --block`),
# a worker on each other node (`srun -w <node> ray start --address HEAD --block`), all in the background; once
# every node has joined, this batch script (on the first node) runs
#     python -m lakd.cli tune --address auto "$@"
# and the Ray processes end with the allocation. RAY_ADDRESS is exported, so "auto" finds this job's head even
# when another Ray runs on the same node. Trials read/write the run directory: keep it on a shared filesystem.
#
# Site defaults: edit the #SBATCH lines or override them on the sbatch command line.
#SBATCH --job-name=lakd-tune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=4G
#SBATCH --time=08:00:00
#SBATCH --output=lakd-tune-%j.out
##SBATCH --gpus-per-task=1
##SBATCH --exclusive
##SBATCH --partition=YOUR_PARTITION
##SBATCH --account=YOUR_ACCOUNT
#
# Environment knobs (as in slurm/distill.sh): LAKD_REPO, LAKD_VENV (none = python on PATH), LAKD_SETUP;
#   LAKD_TUNE_SCRIPT   a driver script to run instead of `python -m lakd.cli tune` (e.g. $LAKD_REPO/tune/search.py)
#   LAKD_RAY_PORT      the head's GCS port (default 6379 + job id % 1000, so jobs sharing a node do not clash)
#   LAKD_RAY_WAIT      seconds to wait for all Ray nodes to join (default 180)
set -euo pipefail
[ -n "${SLURM_JOB_ID:-}" ] || { echo "run this with sbatch (it needs a SLURM allocation)" >&2; exit 2; }

find_repo() {
  local script=""
  if [ -n "${LAKD_REPO:-}" ]; then echo "$LAKD_REPO"; return; fi
  script=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -1)
  [ -n "$script" ] && [ -f "$script" ] || script=${BASH_SOURCE[0]}
  (cd "$(dirname "$script")/.." && pwd)
}
REPO=$(find_repo)
if [ ! -f "$REPO/lakd/__init__.py" ] && [ -f "${SLURM_SUBMIT_DIR:-}/lakd/__init__.py" ]; then REPO=$SLURM_SUBMIT_DIR; fi
[ -f "$REPO/lakd/__init__.py" ] || { echo "cannot find the lakd checkout (looked at $REPO); set LAKD_REPO" >&2; exit 1; }

if [ -n "${LAKD_SETUP:-}" ]; then eval "$LAKD_SETUP"; fi
VENV=${LAKD_VENV:-$REPO/.venv}
if [ "$VENV" != none ]; then
  [ -f "$VENV/bin/activate" ] || { echo "no virtual environment at $VENV (set LAKD_VENV)" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # a private cluster inside this allocation
# a trial the scheduler stops closes its W&B run as its process ends: Ray must not kill W&B's service first
export RAY_kill_child_processes_on_worker_exit=${RAY_kill_child_processes_on_worker_exit:-0}
command -v ray >/dev/null || { echo "no 'ray' command in this environment (pip install 'ray[tune]')" >&2; exit 1; }
if [ -n "${LAKD_TUNE_SCRIPT:-}" ]; then DRIVER=("$LAKD_TUNE_SCRIPT"); else DRIVER=(-m lakd.cli tune); fi

# ------------------------------------------------------------------------------ nodes and addresses
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
# The head's address as the other nodes reach it: what its name resolves to, else its interfaces' (hostname -I);
# IPv4 first, never loopback (Debian's /etc/hosts maps the hostname to 127.0.1.1: workers could not join that).
pick_ip() { # ADDRESS...: the first IPv4 that is not 127.*, else the first that is not loopback at all
  local a
  for a in "$@"; do case "$a" in 127.*) ;; *.*.*.*) echo "$a"; return ;; esac; done
  for a in "$@"; do case "$a" in 127.* | ::1) ;; *) echo "$a"; return ;; esac; done
}
# shellcheck disable=SC2046
HEAD_IP=$(pick_ip $(srun --nodes=1 --ntasks=1 -w "$HEAD" sh -c 'hostname --ip-address; hostname -I' 2>/dev/null))
if [ -z "$HEAD_IP" ]; then
  [ ${#NODES[@]} = 1 ] || { echo "[tune.sh] $HEAD has no address but loopback: the other nodes cannot reach it" >&2; exit 1; }
  HEAD_IP=127.0.0.1 # one node: loopback will do
fi
PORT=${LAKD_RAY_PORT:-$((6379 + SLURM_JOB_ID % 1000))}
export RAY_ADDRESS="$HEAD_IP:$PORT"

# Resources of one node as SLURM granted them (Ray would otherwise count the whole machine).
RES=(--num-cpus "${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}")
[ -n "${SLURM_GPUS_PER_TASK:-}" ] && RES+=(--num-gpus "${SLURM_GPUS_PER_TASK##*:}")
TMP_BASE=${LAKD_RAY_TMP:-/tmp}/ray-$SLURM_JOB_ID   # per-job session files (sockets need a short path)

echo "[tune.sh] $(date -Is) job $SLURM_JOB_ID: Ray head on $HEAD ($RAY_ADDRESS), ${#NODES[@]} node(s): ${NODES[*]}"
srun --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port="$PORT" --include-dashboard=false --disable-usage-stats \
  --temp-dir="$TMP_BASE" "${RES[@]}" --block &
PIDS=($!)

wait_for() { # SECONDS WHAT CMD...
  local limit=$1 what=$2 t=0; shift 2
  until "$@" >/dev/null 2>&1; do
    sleep 2; t=$((t + 2))
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "[tune.sh] a ray start step exited early" >&2; exit 1; }; done
    [ $t -lt "$limit" ] || { echo "[tune.sh] timed out after ${limit}s waiting for $what" >&2; exit 1; }
  done
}
wait_for "${LAKD_RAY_WAIT:-180}" "the Ray head" ray status --address "$RAY_ADDRESS"

for ((i = 1; i < ${#NODES[@]}; i++)); do
  srun --nodes=1 --ntasks=1 -w "${NODES[$i]}" \
    ray start --address "$RAY_ADDRESS" "${RES[@]}" --block &
  PIDS+=($!)
done
all_joined() { # every node of the allocation is an alive Ray node
  local n
  n=$(python -c 'import ray; ray.init(address="auto", logging_level="ERROR", log_to_driver=False); print(sum(1 for x in ray.nodes() if x["Alive"]))' 2>/dev/null | tail -1)
  [ "$n" = "${#NODES[@]}" ]
}
wait_for "${LAKD_RAY_WAIT:-180}" "${#NODES[@]} Ray node(s) to join" all_joined
echo "[tune.sh] $(date -Is) all ${#NODES[@]} Ray node(s) up; running python ${DRIVER[*]} --address auto $*"

set +e
python -u "${DRIVER[@]}" --address auto "$@"
rc=$?
set -e
kill "${PIDS[@]}" 2>/dev/null || true   # srun passes the signal to its `ray start --block` (else the job end does)
wait 2>/dev/null || true
exit $rc
