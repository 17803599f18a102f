#!/bin/bash
# slurm/distill.sh - run the whole lakd pipeline on SLURM:
#     sbatch slurm/distill.sh CONFIG [lakd launch options...]
#     sbatch slurm/distill.sh my.yaml --run-dir /scratch/$USER/runs/exp1 --set distill.kd_weight=0.5
#
# Design: this is a small DRIVER job (1 CPU, a few minutes). It runs `lakd launch --executor slurm`, which
# submits every stage as its own SLURM job through submitit - shards -> teachers (a job array, one task per
# language) -> cache -> student -> evaluate - chained with --dependency=afterok, each with the resources of
# `launch.resources.<stage>` in the config, and exits. The scheduler then starts each stage when its inputs
# succeeded; no process has to stay alive for the whole pipeline, a failed stage cancels its dependents, and
# a relaunch (the same command again) skips every stage that finished. Follow it with
#     lakd status RUN_DIR            (or: squeue -u $USER)
# Why not all stages inside one allocation with srun? The stages want very different resources (8 GPUs for the
# student, 1 each for the teachers, none for evaluation), an allocation sized for the largest would sit idle
# most of the time, and its time limit would have to cover the whole pipeline.
# Needs: sbatch available on compute nodes (it is on most sites; if not, run this script on the login node
# instead: `bash slurm/distill.sh CONFIG` does the same without the driver job).
# LAKD_WAIT=1 makes the driver watch the graph until it ends (and cancel what is left when a stage fails);
# then give the driver a --time long enough for the whole pipeline.
#
# Site defaults: edit the #SBATCH lines below or override them on the command line (sbatch -p short ...).
# Per-stage partitions/accounts/GPUs belong in the config (launch.resources), see slurm/README.md.
#SBATCH --job-name=lakd-driver
#SBATCH --time=00:30:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --output=lakd-driver-%j.out
##SBATCH --partition=YOUR_PARTITION
##SBATCH --account=YOUR_ACCOUNT
##SBATCH --qos=YOUR_QOS
#
# Environment knobs:
#   LAKD_REPO    the lakd checkout (default: found from this script's submitted path)
#   LAKD_VENV    virtual environment to activate (default: $LAKD_REPO/.venv); LAKD_VENV=none = use the
#                python already on PATH (e.g. a conda env activated in LAKD_SETUP)
#   LAKD_SETUP   shell commands run first, e.g. "module load cuda/12.1" or "source ~/miniconda3/bin/activate lakd"
#   LAKD_WAIT    1 = the driver waits for the whole graph (default 0: submit and exit)
set -euo pipefail

CONFIG=${1:-}
[ -n "$CONFIG" ] || { echo "usage: sbatch slurm/distill.sh CONFIG [lakd launch options]" >&2; exit 2; }
shift

# Under sbatch this file runs from a spool copy, so find the checkout from the path that was submitted.
find_repo() {
  local script=""
  if [ -n "${LAKD_REPO:-}" ]; then echo "$LAKD_REPO"; return; fi
  if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null; then
    script=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -1)
  fi
  [ -n "$script" ] && [ -f "$script" ] || script=${BASH_SOURCE[0]}
  (cd "$(dirname "$script")/.." && pwd)
}
REPO=$(find_repo)
if [ ! -f "$REPO/lakd/__init__.py" ] && [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -f "$SLURM_SUBMIT_DIR/lakd/__init__.py" ]; then
  REPO=$SLURM_SUBMIT_DIR
fi
[ -f "$REPO/lakd/__init__.py" ] || { echo "cannot find the lakd checkout (looked at $REPO); set LAKD_REPO" >&2; exit 1; }

# ------------------------------------------------------------------ site setup: modules, conda, ...
if [ -n "${LAKD_SETUP:-}" ]; then eval "$LAKD_SETUP"; fi

VENV=${LAKD_VENV:-$REPO/.venv}
if [ "$VENV" != none ]; then
  [ -f "$VENV/bin/activate" ] || { echo "no virtual environment at $VENV (set LAKD_VENV, or LAKD_VENV=none with LAKD_SETUP activating yours)" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

WAIT_FLAG=--no-wait
[ "${LAKD_WAIT:-0}" = 1 ] && WAIT_FLAG=--wait
echo "[distill.sh] $(date -Is) job ${SLURM_JOB_ID:-none} on $(hostname): lakd launch --config $CONFIG $* (python: $(command -v python))"
# The stage jobs inherit this python (sys.executable) and the working directory: relative paths in the
# config and --run-dir are relative to where you ran sbatch.
exec python -m lakd.cli launch --config "$CONFIG" --executor slurm "$WAIT_FLAG" "$@"
