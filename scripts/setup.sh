#!/usr/bin/env bash
# Set up a fresh machine for lakd: system packages (espeak-ng for the synthetic corpus) and a virtualenv
# with the pinned Python dependencies. Idempotent; re-run after pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing espeak-ng (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng libespeak-ng1 >/dev/null
  else
    echo "[setup] espeak-ng is missing: install it (Debian/Ubuntu: sudo apt-get install espeak-ng)" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "[setup] installing lakd and pinned dependencies (first time: ~5 min)"
"$VENV/bin/python" -m pip install -q --no-cache-dir -e ".[test]"
"$VENV/bin/python" -m pip check
touch "$VENV/.lakd-installed"
echo "[setup] ready: $VENV/bin/lakd"
