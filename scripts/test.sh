#!/usr/bin/env bash
# Run the whole test suite. As root, a real single-node SLURM is started first (slurm/local-cluster.sh) so the
# cluster tests run against it; LAKD_REQUIRE_SLURM=1 (set in CI) turns "no SLURM" into a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=offline RAY_AUTH_MODE=disabled
if [ "$(id -u)" = 0 ]; then
  bash slurm/local-cluster.sh start
  export LAKD_REQUIRE_SLURM=${LAKD_REQUIRE_SLURM:-1}
else
  echo "[test] not root: the SLURM tests will be skipped (start slurm/local-cluster.sh as root to run them)"
fi
echo "[test] ruff check + format --check (lint errors fail the run)"
"$VENV/bin/ruff" check lakd tests tune bench
"$VENV/bin/ruff" format --check lakd tests tune bench
set +e
"$VENV/bin/pytest" -q -ra --durations=15 "$@"
rc=$?
set -e
exit $rc
